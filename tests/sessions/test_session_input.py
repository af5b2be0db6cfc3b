"""Found in a review of the session layer (each failed on the old code): bad input that killed
a session instead of getting its code, a refused `replace` that still dropped the other
subscriptions, a `hello` that bypassed the rate limit, and command metrics labelled with class
names instead of the wire types the docs promise."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.errors import StoreUnavailable
from protocol.codes import CloseCode
from protocol.messages import Error, Result
from tests.conftest import REDIS_URL
from tests.live_support import pos, sale
from tests.support import WsClient, pos_token, running_node, settings_for

pytestmark = pytest.mark.world(members=2)


async def _next_frame(c: WsClient, before: int) -> object:
    for _ in range(100):
        if len(c.frames) > before or c.close_code is not None:
            break
        await asyncio.sleep(0.02)
    return c.frames[-1] if len(c.frames) > before else None


async def test_a_binary_frame_of_invalid_utf8_gets_malformed_frame(
    http, pg_dsn, redis_prefix, world
):
    """msgspec raises UnicodeDecodeError for such bytes inside a JSON string; nothing caught
    it, and the session ended with 1006 and no error frame (before and after hello)."""
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        c = await pos(http, rn.url, world["merchant"])
        before = len(c.frames)
        await c.ws.send_bytes(b'{"type":"ping","id":"\xff"}')
        err = await _next_frame(c, before)
        assert c.close_code is None, f"session closed with {c.close_code}"
        assert isinstance(err, Error) and err.code == "malformed_frame", err
        assert isinstance(await c.request({"type": "ping"}), Result)
        await c.close()

        c = await WsClient.connect(http, rn.url)
        await c.ws.send_bytes(b'{"type":"hello","id":"\xff","versions":[1],"token":"x"}')
        code = await c.wait_closed()
        errors = [f for f in c.frames if isinstance(f, Error)]
        assert errors and errors[0].code == "malformed_frame", (code, c.frames)
        assert code == CloseCode.PROTOCOL_VIOLATION


async def test_a_binary_frame_is_refused_whatever_it_holds(http, pg_dsn, redis_prefix, world):
    """Every frame is one text message: a binary one holding a valid command is refused with
    ``malformed_frame`` (it was answered), and the session goes on."""
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        c = await pos(http, rn.url, world["merchant"])
        before = len(c.frames)
        await c.ws.send_bytes(b'{"type":"ping","id":"b1"}')
        err = await _next_frame(c, before)
        assert isinstance(err, Error) and err.code == "malformed_frame", err
        assert "text" in err.message and err.retryable is False
        assert isinstance(await c.request({"type": "ping"}), Result)
        await c.close()


async def test_a_refused_replace_keeps_the_other_subscriptions(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """`subscribe` with `replace` dropped the other members before joining the new one; when
    the join failed (`unavailable`, retryable) they stayed dropped, while the client, told
    nothing changed, still believed it watched them: their pushes stopped silently."""
    m1, m2 = world["members"]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        till = await pos(http, rn.url, world["merchant"])
        seller = await pos(http, rn.url, world["merchant"], "t2")
        assert isinstance(await till.request({"type": "subscribe", "member": m1}), Result)
        reads = rn.node.feeds._reads
        real_balance = reads.balance

        async def balance(member: str) -> Any:
            if member == m2:
                raise StoreUnavailable("PostgreSQL unavailable during balance read")
            return await real_balance(member)

        monkeypatch.setattr(reads, "balance", balance)
        failed = await till.request({"type": "subscribe", "member": m2, "replace": True})
        assert isinstance(failed, Error) and failed.code == "unavailable" and failed.retryable
        monkeypatch.undo()
        (session,) = [s for s in rn.node.sessions if s.principal.terminal == "t1"]
        assert session.subscriptions == {m1}, session.subscriptions
        done = await sale(seller, m1)
        change = await till.next_change()
        assert change.member == m1 and change.version == done.data.balance.version
        # A replace at the limit still works: the members it drops make room.
        assert isinstance(await till.request({"type": "subscribe", "member": m2}), Result)
        assert session.subscriptions == {m1, m2}
        await till.close()
        await seller.close()

    async with running_node(
        settings_for(pg_dsn, REDIS_URL, "n2", max_subscriptions=1), redis_prefix
    ) as rn:
        till = await pos(http, rn.url, world["merchant"])
        assert isinstance(await till.request({"type": "subscribe", "member": m1}), Result)
        moved = await till.request({"type": "subscribe", "member": m2, "replace": True})
        assert isinstance(moved, Result), moved
        (session,) = list(rn.node.sessions)
        assert session.subscriptions == {m2}
        await till.close()


async def test_a_repeated_hello_is_rate_limited(http, pg_dsn, redis_prefix, world):
    """A `hello` after welcome was answered `already_authenticated` before the rate limit:
    a session could make the node decode and answer frames at any rate."""
    settings = settings_for(pg_dsn, REDIS_URL, "n1", rate_per_second=1)
    async with running_node(settings, redis_prefix) as rn:
        c = await pos(http, rn.url, world["merchant"])
        token = pos_token(world["merchant"])
        replies = await asyncio.gather(
            *(c.request({"type": "hello", "versions": [1], "token": token}) for _ in range(30))
        )
        codes = [r.code for r in replies if isinstance(r, Error)]
        assert len(codes) == 30
        assert codes.count("rate_limited") >= 25, codes
        await c.close()


async def test_command_metrics_are_labelled_with_the_wire_type(http, pg_dsn, redis_prefix, world):
    """deploy/README.md promises `command="balance"`; the label was the class name
    (`getbalance`, `getoutcome`, `cashierview`)."""
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        c = await pos(http, rn.url, world["merchant"])
        member = world["members"][0]
        assert isinstance(await c.request({"type": "balance", "member": member}), Result)
        assert isinstance(await c.request({"type": "outcome", "op": "nope"}), Error)
        async with http.get(rn.url + "/metrics") as r:
            text = await r.text()
        labels = {
            line.split('command="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("gateway_command_seconds_count")
        }
        assert {"balance", "outcome"} <= labels, labels
        assert not {"getbalance", "getoutcome"} & labels, labels
        await c.close()


def test_a_signed_exp_beyond_a_float_is_token_invalid() -> None:
    """`exp` = 10**400 passed PyJWT (it compares ints) and then raised OverflowError, which
    is no AuthError: the hello's session died with 1006 instead of token_invalid."""
    import jwt

    from gateway import auth
    from gateway.errors import AuthError
    from tests.support import SECRET

    claims = {"typ": "pos", "mer": "m", "sto": "s", "ter": "t", "exp": 10**400}
    with pytest.raises(AuthError) as caught:
        auth.verify(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))
    assert caught.value.code.value == "token_invalid"
