"""The token examples of protocol/README.md ("Tokens") mint what a node accepts: the Python block
and the JavaScript block are taken from the guide as they are, run, and their tokens say
``hello`` to a node that holds the merchant's key. An example that drifts from the gateway's
checks (a claim renamed, the key id left out) fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway import auth
from gateway.merchant_keys import MerchantKeys
from protocol.messages import Welcome
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import enrol, phone
from tests.support import RunningNode, WsClient, running_node, settings_for

GUIDE = Path(__file__).resolve().parents[1] / "protocol" / "README.md"
KEY_ID = "guide-key-1"
KEY = "k" * 48


def _section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("\n## Tokens\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _block(language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", _section(), re.M | re.S)
    assert len(blocks) == 1, f"the Tokens section should hold one {language} block"
    return str(blocks[0])


@pytest.fixture
def env(merchant: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "LOYALTY_MERCHANT": merchant,
        "LOYALTY_KEY_ID": KEY_ID,
        "LOYALTY_SIGNING_KEY": KEY,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
async def node(pg_dsn: str, redis_prefix: str, merchant: str) -> AsyncIterator[RunningNode]:
    keys = MerchantKeys(signing={KEY_ID: (merchant, KEY)})
    s = settings_for(pg_dsn, REDIS_URL, "guide")
    s = replace(s, auth=replace(s.auth, merchant_keys=keys))
    async with running_node(s, redis_prefix) as running:
        yield running


def _python_example() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "token_example"}
    exec(compile(_block("python"), str(GUIDE), "exec"), namespace)
    return namespace


def _js_example(env: dict[str, str], calls: str) -> list[str]:
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.skip("node is not installed")
    script = _block("js") + f"\nconsole.log(JSON.stringify([{calls}]));\n"
    out = subprocess.run(
        [node_bin, "--input-type=module", "-e", script],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return list(json.loads(out.stdout))


async def _welcomed(http: Any, node: RunningNode, token: str) -> Welcome:
    client = await WsClient.connect(http, node.url)
    try:
        reply = await client.hello(token)
    finally:
        await client.close()
    assert isinstance(reply, Welcome), reply
    return reply


def _verify(token: str, merchant: str) -> auth.Principal:
    keys = MerchantKeys(signing={KEY_ID: (merchant, KEY)})
    return auth.verify("the-operator-secret-is-not-used-here" + "x" * 8, token, keys=keys)


async def _check(
    http: Any,
    node: RunningNode,
    merchant: str,
    pos: Callable[[], str],
    app: Callable[[str], str],
) -> None:
    till_token = pos()
    principal = _verify(till_token, merchant)
    assert (principal.kind, principal.merchant, principal.store, principal.terminal) == (
        "pos",
        merchant,
        "s-1",
        "pos7",
    )
    till = await WsClient.connect(http, node.url)
    welcome = await till.hello(till_token)
    assert isinstance(welcome, Welcome), welcome
    assert (welcome.scope.kind, welcome.scope.store, welcome.scope.terminal) == (
        "pos",
        "s-1",
        "pos7",
    )
    member = (await enrol(till, phone=phone())).member
    await till.close()

    app_token = app(member)
    assert _verify(app_token, merchant).member == member
    welcome = await _welcomed(http, node, app_token)
    assert (welcome.scope.kind, welcome.scope.member, welcome.scope.channel) == (
        "app",
        member,
        "app",
    )


async def test_the_python_example_mints_tokens_a_node_accepts(
    http: Any, node: RunningNode, merchant: str, env: dict[str, str]
) -> None:
    example = _python_example()
    await _check(
        http,
        node,
        merchant,
        lambda: str(example["pos_token"]("s-1", "pos7")),
        lambda member: str(example["app_token"](member)),
    )
    web = example["app_token"](unique("m"), "web")
    assert _verify(web, merchant).channel == "web"


async def test_the_javascript_example_mints_tokens_a_node_accepts(
    http: Any, node: RunningNode, merchant: str, env: dict[str, str]
) -> None:
    [pos] = _js_example(env, 'posToken("s-1", "pos7")')
    members: dict[str, str] = {}

    def app(member: str) -> str:
        members[member] = _js_example(env, f"appToken({json.dumps(member)})")[0]
        return members[member]

    await _check(http, node, merchant, lambda: pos, app)
    # the same claims as the Python example's, but for iat and exp
    python = _python_example()
    js_claims = _claims(pos)
    py_claims = _claims(python["pos_token"]("s-1", "pos7"))
    assert {k: v for k, v in js_claims.items() if k not in ("iat", "exp")} == {
        k: v for k, v in py_claims.items() if k not in ("iat", "exp")
    }
    assert js_claims["exp"] - js_claims["iat"] == 8 * 3600


def _claims(token: str) -> dict[str, Any]:
    import jwt

    assert jwt.get_unverified_header(token)["kid"] == KEY_ID
    return dict(jwt.decode(token, KEY, algorithms=["HS256"]))


def test_a_token_without_its_key_id_or_of_another_algorithm_is_refused(
    env: dict[str, str], merchant: str
) -> None:
    import jwt

    from gateway.errors import AuthError

    claims = {"typ": "pos", "mer": merchant, "sto": "s-1", "ter": "pos7", "exp": 2**31}
    for token in (
        jwt.encode(claims, KEY, algorithm="HS256"),  # no kid: read as the operator's
        jwt.encode(claims, KEY * 2, algorithm="HS512", headers={"kid": KEY_ID}),
        jwt.encode({**claims, "aud": "gateway"}, KEY, algorithm="HS256", headers={"kid": KEY_ID}),
    ):
        with pytest.raises(AuthError):
            _verify(token, merchant)
