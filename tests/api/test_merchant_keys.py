"""Per-merchant credentials: a merchant's signing key mints tokens of that merchant only, and a
merchant's admin token reaches that merchant's admin routes and broadcasts only; the
operator's secrets keep reaching every merchant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway import auth
from gateway.errors import AuthError
from gateway.merchant_keys import ANY_MERCHANT, MerchantKeys, admin_reach
from gateway.settings import Settings
from protocol.codes import CloseCode
from protocol.messages import Error, Welcome
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import ADMIN, new_merchant, ok, phone
from tests.support import SECRET, RunningNode, WsClient, running_node, settings_for

KEY_A = "a" * 40
KEY_B = "b" * 40
ADMIN_A = "admin-token-of-merchant-a-" + "x" * 20
ADMIN_B = "admin-token-of-merchant-b-" + "y" * 20


def _keys(a: str, b: str) -> MerchantKeys:
    return MerchantKeys.parse(
        {
            a: {"signing_keys": {"ka-1": KEY_A}, "admin_tokens": [ADMIN_A]},
            b: {"signing_keys": {"kb-1": KEY_B}, "admin_tokens": [ADMIN_B]},
        },
        "dev-admin-token",
    )


# ----------------------------------------------------------------------------- the file


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ([], "JSON object"),
        ({"bad id!": {}}, "not a valid merchant id"),
        ({"a": {"signing_keys": {"k": "short"}}}, "at least 32 bytes"),
        ({"a": {"signing_keys": {"k": KEY_A}}, "b": {"signing_keys": {"k": KEY_B}}}, "twice"),
        ({"a": {"admin_tokens": ["short"]}}, "at least 32 characters"),
        ({"a": {"admin_tokens": [ADMIN_A]}, "b": {"admin_tokens": [ADMIN_A]}}, "twice"),
        ({"a": {"admin_tokens": ["dev-admin-token" * 3]}}, "GATEWAY_ADMIN_TOKEN"),
        ({"a": {"signing_key": {"k": KEY_A}}}, "expected only"),
        ({"a": {"admin_tokens": "one"}}, "must be a list"),
    ],
)
def test_a_bad_keys_file_is_refused_with_its_reason(raw: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        MerchantKeys.parse(raw, "dev-admin-token" * 3)


def test_two_keys_may_not_share_a_secret_and_a_bad_key_id_is_not_echoed() -> None:
    """Found in review: two merchants' keys with one secret were accepted, so merchant A could
    sign with B's key id and ``mer`` B; and a key id swapped with its secret printed the secret
    in the start-up error."""
    with pytest.raises(ValueError, match="reuses another key's secret"):
        MerchantKeys.parse(
            {"a": {"signing_keys": {"ka": KEY_A}}, "b": {"signing_keys": {"kb": KEY_A}}}
        )
    swapped = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
    with pytest.raises(ValueError, match="not a valid id") as info:
        MerchantKeys.parse({"a": {"signing_keys": {swapped: "ka-1"}}})
    assert swapped not in str(info.value)
    urlsafe = "Zq3" * 21  # what secrets.token_urlsafe(47) looks like: a valid id too
    with pytest.raises(ValueError, match="at least 32 bytes") as info:
        MerchantKeys.parse({"a": {"signing_keys": {urlsafe: "ka-1"}}})
    assert urlsafe not in str(info.value)


def test_a_merchant_key_may_not_be_the_operators_secret() -> None:
    """It would also sign kid-less tokens, which reach every merchant (found in review)."""
    with pytest.raises(ValueError, match="GATEWAY_JWT_SECRET"):
        MerchantKeys.parse({"a": {"signing_keys": {"k": SECRET}}}, "", SECRET)


def test_the_keys_file_is_read_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"acme": {"signing_keys": {"acme-1": KEY_A}}}))
    s = Settings.from_env({"GATEWAY_MERCHANT_KEYS_FILE": str(path)})
    assert s.auth.merchant_keys.signing_key("acme-1") == ("acme", KEY_A)
    assert KEY_A not in repr(s)
    with pytest.raises(ValueError, match="GATEWAY_MERCHANT_KEYS_FILE"):
        Settings.from_env({"GATEWAY_MERCHANT_KEYS_FILE": str(tmp_path / "missing.json")})


# ----------------------------------------------------------------------------- tokens


def _signed(header: dict[str, object], claims: dict[str, object], key: str) -> str:
    """A JWT PyJWT would not make (a key id that is not a string)."""

    def part(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    body = part(json.dumps(header).encode()) + b"." + part(json.dumps(claims).encode())
    return (body + b"." + part(hmac.new(key.encode(), body, hashlib.sha256).digest())).decode()


def test_a_merchant_key_signs_for_its_merchant_only() -> None:
    keys = _keys("a", "b")
    p = auth.verify(SECRET, auth.mint_pos(KEY_A, "a", "s1", "t1", kid="ka-1"), keys=keys)
    assert (p.kind, p.merchant, p.terminal) == ("pos", "a", "t1")
    p = auth.verify(SECRET, auth.mint_app(KEY_B, "b", "m-1", kid="kb-1"), keys=keys)
    assert (p.kind, p.merchant, p.member) == ("app", "b", "m-1")
    refused = [
        auth.mint_pos(KEY_A, "b", "s1", "t1", kid="ka-1"),  # a's key, b's claim
        auth.mint_app(KEY_A, "b", "m-1", kid="ka-1"),
        auth.mint_pos(KEY_A, "a", "s1", "t1", kid="kb-1"),  # signed by a, names b's key
        auth.mint_pos(KEY_A, "a", "s1", "t1", kid="nobody"),  # unknown key
        auth.mint_pos(SECRET, "a", "s1", "t1", kid="ka-1"),  # the operator's secret, a's kid
        _signed({"alg": "HS256", "kid": 7}, {"typ": "pos", "mer": "a", "exp": 2**40}, KEY_A),
    ]
    for token in refused:
        with pytest.raises(AuthError) as caught:
            auth.verify(SECRET, token, keys=keys)
        assert caught.value.code.value == "token_invalid"
    with pytest.raises(AuthError):  # no keys configured: a kid is refused
        auth.verify(SECRET, auth.mint_pos(KEY_A, "a", "s1", "t1", kid="ka-1"))
    # The operator's tokens (no kid) still reach any merchant.
    assert auth.verify(SECRET, auth.mint_pos(SECRET, "b", "s1", "t1"), keys=keys).merchant == "b"
    expired = auth.mint_pos(KEY_A, "a", "s1", "t1", ttl=-60, kid="ka-1")
    with pytest.raises(AuthError) as caught:
        auth.verify(SECRET, expired, keys=keys)
    assert caught.value.code.value == "token_expired"


def test_admin_reach() -> None:
    keys = _keys("a", "b")
    assert admin_reach("Bearer dev-admin-token", "dev-admin-token", keys) == ANY_MERCHANT
    assert admin_reach(f"Bearer {ADMIN_A}", "dev-admin-token", keys) == "a"
    assert admin_reach(f"bearer  {ADMIN_B} ", "dev-admin-token", keys) == "b"
    for header in ("", "Bearer", "Bearer ", f"Basic {ADMIN_A}", f"Bearer {ADMIN_A}x", ADMIN_A):
        assert admin_reach(header, "dev-admin-token", keys) is None
    assert admin_reach("Bearer ", "", keys) is None  # no operator token configured


# ----------------------------------------------------------------------------- a node


@pytest.fixture
async def two(pg_dsn: str) -> tuple[str, str]:
    return await new_merchant(pg_dsn), await new_merchant(pg_dsn)


@pytest.fixture
async def keyed(pg_dsn: str, redis_prefix: str, two: tuple[str, str]) -> AsyncIterator[RunningNode]:
    s = settings_for(pg_dsn, REDIS_URL, "mk")
    s = replace(s, auth=replace(s.auth, merchant_keys=_keys(*two)))
    async with running_node(s, redis_prefix) as node:
        yield node


async def test_a_node_takes_a_merchants_own_tokens_for_that_merchant_only(
    http, keyed: RunningNode, two: tuple[str, str]
) -> None:
    a, b = two
    till = await WsClient.connect(http, keyed.url)
    assert isinstance(await till.hello(auth.mint_pos(KEY_A, a, "s1", "t1", kid="ka-1")), Welcome)
    m = (await ok(till, {"type": "enrol", "phone": phone()})).member
    sold = await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000})
    assert sold.balance.posted == 10
    app = await WsClient.connect(http, keyed.url)
    assert isinstance(await app.hello(auth.mint_app(KEY_A, a, m, kid="ka-1")), Welcome)
    await till.close()
    await app.close()

    for token in (
        auth.mint_pos(KEY_A, b, "s1", "t1", kid="ka-1"),  # a's key minting b's terminal
        auth.mint_app(KEY_A, b, m, kid="ka-1"),
        auth.mint_pos(KEY_B, a, "s1", "t1", kid="kb-1"),
    ):
        c = await WsClient.connect(http, keyed.url)
        reply = await c.hello(token)
        assert isinstance(reply, Error) and reply.code == "token_invalid", reply
        assert await c.wait_closed() == CloseCode.TOKEN_INVALID


async def test_a_merchants_admin_token_reaches_that_merchant_only(
    http, keyed: RunningNode, two: tuple[str, str]
) -> None:
    a, b = two
    own = {"Authorization": f"Bearer {ADMIN_A}"}
    base = f"{keyed.url}/admin/v1/merchants"
    async with http.get(f"{base}/{a}", headers=own) as resp:
        assert resp.status == 200, await resp.text()
    body = {"phone": phone()}
    answers = []
    for target in (b, "nobody-here"):  # another merchant reads as an unknown one
        async with http.get(f"{base}/{target}", headers=own) as resp:
            answers.append((resp.status, await resp.json()))
        async with http.post(f"{base}/{target}/members", json=body, headers=own) as resp:
            assert resp.status == 404
        async with http.put(f"{base}/{target}", json={}, headers=own) as resp:
            assert resp.status == 404  # would create the merchant under the operator's token
    assert answers[0] == answers[1] == (404, answers[0][1])
    async with http.get(f"{base}/{b}", headers=ADMIN) as resp:
        assert resp.status == 200  # the operator's token reaches every merchant
    async with http.get(f"{base}/{a}", headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 401

    notice = {"merchant": b, "kind": "offer", "payload": {}}
    async with http.post(f"{keyed.url}/admin/broadcast", json=notice, headers=own) as resp:
        assert resp.status == 404
    notice["merchant"] = a
    async with http.post(f"{keyed.url}/admin/broadcast", json=notice, headers=own) as resp:
        assert resp.status == 200
    async with http.post(f"{keyed.url}/admin/broadcast", json=notice, headers={}) as resp:
        assert resp.status == 401
