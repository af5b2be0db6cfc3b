"""The running gateway against the real PostgreSQL and Redis: authentication, bad input,
scope, and the sale -> push path across two nodes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from protocol.codes import CloseCode
from protocol.limits import MAX_FRAME_BYTES
from protocol.messages import Error, Result, Welcome
from tests.conftest import REDIS_URL, unique
from tests.support import SECRET, WsClient, app_token, pos_token, running_node, settings_for

pytestmark = pytest.mark.world(members=2)


@pytest.fixture
async def node(pg_dsn: str, redis_prefix: str) -> AsyncIterator[str]:
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        yield rn.url


async def pos(http: aiohttp.ClientSession, url: str, merchant: str) -> WsClient:
    c = await WsClient.connect(http, url)
    w = await c.hello(pos_token(merchant))
    assert isinstance(w, Welcome), w
    return c


async def test_hello_welcome_carries_scope_and_version(http, node, world):
    c = await WsClient.connect(http, node)
    w = await c.hello(pos_token(world["merchant"], "store-9", "till-3"), versions=[7, 1])
    assert isinstance(w, Welcome)
    assert w.version == 1
    assert (w.scope.kind, w.scope.merchant, w.scope.store, w.scope.terminal) == (
        "pos",
        world["merchant"],
        "store-9",
        "till-3",
    )
    assert w.heartbeat_ms > 0
    await c.close()


async def test_command_before_hello_is_refused_and_closed(http, node):
    c = await WsClient.connect(http, node)
    reply = await c.request({"type": "balance", "member": "x"})
    assert isinstance(reply, Error) and reply.code == "not_authenticated"
    assert await c.wait_closed() == CloseCode.TOKEN_INVALID


@pytest.mark.parametrize(
    ("token", "code", "close"),
    [
        ("not-a-jwt", "token_invalid", CloseCode.TOKEN_INVALID),
        ("EXPIRED", "token_expired", CloseCode.TOKEN_EXPIRED),
        ("WRONGKEY", "token_invalid", CloseCode.TOKEN_INVALID),
    ],
)
async def test_bad_tokens(http, node, world, token, code, close):
    from gateway import auth

    if token == "EXPIRED":
        token = auth.mint_pos(SECRET, world["merchant"], "s", "t", ttl=-60)
    elif token == "WRONGKEY":
        token = auth.mint_pos(
            "another-secret-that-is-long-enough-for-hs256", world["merchant"], "s", "t"
        )
    c = await WsClient.connect(http, node)
    reply = await c.hello(token)
    assert isinstance(reply, Error) and reply.code == code
    assert await c.wait_closed() == close


async def test_unsupported_version(http, node, world):
    c = await WsClient.connect(http, node)
    reply = await c.hello(pos_token(world["merchant"]), versions=[99])
    assert isinstance(reply, Error) and reply.code == "unsupported_version"
    assert await c.wait_closed() == CloseCode.UNSUPPORTED_VERSION


async def test_bad_frames_get_codes_and_session_survives(http, node, world):
    c = await pos(http, node, world["merchant"])
    cases = [
        ("{not json", "malformed_frame"),
        ("[1,2,3]", "malformed_frame"),
        ('{"type":"teleport","id":"q1"}', "unknown_type"),
        ('{"type":"reserve","id":"q2","op":"o","member":"m","points":-5}', "invalid_field"),
        ('{"type":"reserve","id":"q3","op":"o","member":"m","points":0}', "invalid_field"),
        ('{"type":"reserve","id":"q4","op":"o","member":"m","points":1.5}', "invalid_field"),
        (
            '{"type":"reserve","id":"q5","op":"o","member":"m","points":99999999999}',
            "invalid_field",
        ),
        ('{"type":"balance","id":"q6","member":"bad id!"}', "invalid_field"),
        ('{"type":"ping","id":"q7","x":"' + "a" * MAX_FRAME_BYTES + '"}', "frame_too_large"),
    ]
    for raw, code in cases:
        before = len(c.frames)
        await c.send_raw(raw)
        for _ in range(100):
            if len(c.frames) > before:
                break
            await asyncio.sleep(0.02)
        err = c.frames[-1]
        assert isinstance(err, Error), (raw[:40], err)
        assert err.code == code, (raw[:40], err)
        assert err.retryable is False
    # request ids are echoed where they could be read
    assert [f.id for f in c.frames[-7:-1]] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    pong = await c.request({"type": "ping"})
    assert isinstance(pong, Result) and type(pong.data).__name__ == "Pong"
    await c.close()


async def test_frame_above_transport_limit_closes_1009(http, node, world):
    c = await pos(http, node, world["merchant"])
    await c.send_raw('{"type":"ping","id":"big","x":"' + "a" * 2_000_000 + '"}')
    assert await c.wait_closed() == 1009


async def test_second_hello_is_refused_session_survives(http, node, world):
    c = await pos(http, node, world["merchant"])
    reply = await c.hello(pos_token(world["merchant"]))
    assert isinstance(reply, Error) and reply.code == "already_authenticated"
    assert isinstance(await c.request({"type": "ping"}), Result)
    await c.close()


async def test_another_merchants_member_is_answered_as_unknown(http, node, world):
    c = await pos(http, node, world["other_merchant"])
    member = world["members"][0]  # belongs to the first merchant
    for frame in (
        {"type": "balance", "member": member},
        {"type": "subscribe", "member": member},
        {"type": "sale", "op": unique("op"), "member": member, "total": 1000},
        {"type": "reserve", "op": unique("op"), "member": member, "points": 1},
    ):
        reply = await c.request(frame)
        fresh = {"op": unique("op")} if "op" in frame else {}
        unknown = await c.request({**frame, **fresh, "member": "no-such-member"})
        # no existence oracle: the same code and message as a member that does not exist
        assert isinstance(reply, Error) and reply.code == "member_not_found", (frame, reply)
        assert isinstance(unknown, Error) and unknown.message == reply.message, (unknown, reply)
    assert isinstance(await c.request({"type": "ping"}), Result)
    await c.close()


async def test_app_token_reaches_only_its_member(http, node, world):
    c = await WsClient.connect(http, node)
    assert isinstance(await c.hello(app_token(world["merchant"], world["members"][0])), Welcome)
    ok = await c.request({"type": "subscribe", "member": world["members"][0]})
    assert isinstance(ok, Result) and type(ok.data).__name__ == "Subscribed"
    for frame in (
        {"type": "subscribe", "member": world["members"][1]},
        {"type": "balance", "member": world["members"][1]},
        {"type": "reserve", "op": unique("op"), "member": world["members"][0], "points": 1},
    ):
        reply = await c.request(frame)
        assert isinstance(reply, Error) and reply.code == "forbidden", (frame, reply)
    await c.close()


async def test_an_app_token_naming_another_merchants_member_is_refused(http, node, world):
    """Found in review: a token of merchant A naming B's member (or no member) was welcomed
    and joined that member's presence: B's tills showed a fake app, and enough of them locked
    the member's real app out (3004)."""
    for member in (world["foreign"], "no-such-member"):
        c = await WsClient.connect(http, node)
        reply = await c.hello(app_token(world["merchant"], member))
        assert isinstance(reply, Error) and reply.code == "token_invalid", reply
        assert await c.wait_closed() == CloseCode.TOKEN_INVALID
    c = await WsClient.connect(http, node)
    assert isinstance(await c.hello(app_token(world["other_merchant"], world["foreign"])), Welcome)
    await c.close()


async def test_unknown_member(http, node, world):
    c = await pos(http, node, world["merchant"])
    reply = await c.request({"type": "balance", "member": "no-such-member"})
    assert isinstance(reply, Error) and reply.code == "member_not_found"
    await c.close()


async def test_sale_on_one_node_pushes_to_app_on_another(http, pg_dsn, redis_prefix, world):
    a_settings = settings_for(pg_dsn, REDIS_URL, "node-a")
    b_settings = settings_for(pg_dsn, REDIS_URL, "node-b")
    async with (
        running_node(a_settings, redis_prefix) as a,
        running_node(b_settings, redis_prefix) as b,
    ):
        app = await WsClient.connect(http, b.url)
        await app.hello(app_token(world["merchant"], world["members"][0]))
        sub = await app.request({"type": "subscribe", "member": world["members"][0]})
        assert isinstance(sub, Result)
        start_version = sub.data.balance.version
        till = await pos(http, a.url, world["merchant"])
        op = unique("sale")
        receipt = await till.request(
            {"type": "sale", "op": op, "member": world["members"][0], "total": 12_345}
        )
        t_reply = time.perf_counter()
        assert isinstance(receipt, Result), receipt
        assert receipt.data.points == 123
        change = await app.next_change()
        lag_ms = (time.perf_counter() - t_reply) * 1000
        assert change.version == start_version + 1
        assert change.posted == receipt.data.balance.posted
        assert change.cause.kind == "earn" and change.cause.op == op
        assert lag_ms < 5000
        # retry of the same sale returns the same receipt and pushes nothing new
        again = await till.request(
            {"type": "sale", "op": op, "member": world["members"][0], "total": 12_345}
        )
        assert again.data == receipt.data
        changed = await till.request(
            {"type": "sale", "op": op, "member": world["members"][0], "total": 999}
        )
        assert isinstance(changed, Error) and changed.code == "idempotency_conflict"
        await till.close()
        await app.close()


async def test_reserve_commit_release_over_the_wire(http, node, world, db):
    till = await pos(http, node, world["merchant"])
    member = world["members"][1]
    await till.request({"type": "sale", "op": unique("s"), "member": member, "total": 100_000})
    bal = (await till.request({"type": "balance", "member": member})).data
    hold = unique("h")
    r = await till.request({"type": "reserve", "op": hold, "member": member, "points": 300})
    assert isinstance(r, Result) and r.data.status == "active"
    assert r.data.balance.available == bal.available - 300
    c = await till.request(
        {"type": "commit", "op": unique("c"), "member": member, "hold": hold, "points": 200}
    )
    assert isinstance(c, Result) and c.data.status == "committed" and c.data.committed == 200
    assert c.data.balance.posted == bal.posted - 200 and c.data.balance.held == bal.held
    again = await till.request(
        {"type": "release", "op": unique("rl"), "member": member, "hold": hold}
    )
    assert isinstance(again, Error) and again.code == "hold_not_active"
    out = await till.request({"type": "outcome", "op": hold})
    assert isinstance(out, Result) and out.data.ok and out.data.data.status == "active"
    missing = await till.request({"type": "outcome", "op": "never-sent"})
    assert isinstance(missing, Error) and missing.code == "operation_not_found"
    await till.close()


async def test_health_and_readiness(http, node):
    async with http.get(node + "/healthz") as r:
        assert r.status == 200
    async with http.get(node + "/readyz") as r:
        body = await r.json()
        assert r.status == 200 and body["postgres"] == "ok" and body["redis"] == "ok"
    async with http.get(node + "/metrics") as r:
        text = await r.text()
    assert r.status == 200 and "gateway_sessions" in text
    # Prometheus' conventions: running totals are counters named _total, the client library's
    # process and interpreter collectors, what runs in gateway_build_info
    for family in (
        "# TYPE gateway_ledger_operations_total counter",
        "# TYPE gateway_ledger_batches_total counter",
        "# TYPE gateway_ledger_shed_total counter",
        "# TYPE gateway_gc_reclaimed_objects_total counter",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE python_gc_collections_total counter",
        "gateway_connections ",
    ):
        assert family in text, family
    assert re.search(
        r'^gateway_build_info\{python="3\.\d+\.\d+",version="[^"]+"\} 1\.0$', text, re.M
    )


async def test_valid_frames_between_garbage_do_not_reset_the_bad_frame_count(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: any decodable frame reset the count, even one refused by the rate
    limit, and malformed frames took no token, so a ping every few frames kept a stream of
    garbage going for ever."""
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_bad_frames=10, rate_per_second=2)
    async with running_node(settings, redis_prefix) as rn:
        c = await pos(http, rn.url, world["merchant"])
        for i in range(40):
            if c.close_code is not None:
                break
            await c.send_raw("{garbage" if i % 3 else f'{{"type":"ping","id":"p{i}"}}')
        assert await c.wait_closed() == CloseCode.PROTOCOL_VIOLATION
        codes = [f.code for f in c.frames if isinstance(f, Error)]
        assert codes.count("malformed_frame") >= 10 and "rate_limited" in codes


async def test_a_session_ends_with_its_token_unless_refreshed(http, pg_dsn, redis_prefix, world):
    """Found in review: a session went on selling after its token expired, for as long as the
    socket lived. Now it is closed with 3501 once its token's exp (plus the leeway) passes,
    unless a ``refresh`` with a token of the same scope moved it."""
    from dataclasses import replace

    settings = settings_for(pg_dsn, REDIS_URL, "n1", heartbeat=0.2)
    settings = replace(settings, auth=replace(settings.auth, leeway=0.0))
    merchant = world["merchant"]
    async with running_node(settings, redis_prefix) as rn:
        kept, left = [await WsClient.connect(http, rn.url) for _ in range(2)]
        for c in (kept, left):
            assert isinstance(await c.hello(pos_token(merchant, ttl=2)), Welcome)
        for token, code in (
            (pos_token(merchant, terminal="t2"), "token_invalid"),  # another scope
            (pos_token(world["other_merchant"]), "token_invalid"),
            (pos_token(merchant, ttl=-60), "token_expired"),
            ("not-a-token", "token_invalid"),
        ):
            reply = await kept.request({"type": "refresh", "token": token})
            assert isinstance(reply, Error) and reply.code == code, (token, reply)
        reply = await kept.request({"type": "refresh", "token": pos_token(merchant)})
        assert isinstance(reply, Result) and reply.data.expires_at > (time.time() + 3000) * 1000
        assert await left.wait_closed(timeout=10) == CloseCode.TOKEN_EXPIRED
        assert isinstance(await kept.request({"type": "ping"}), Result)
        await kept.close()


async def test_metrics_time_every_ledger_batch_by_phase(http, node, world):
    """A reserve's batch shows in ``gateway_ledger_batch_seconds`` under each phase."""
    till = await pos(http, node, world["merchant"])
    r = await till.request(
        {"type": "reserve", "op": unique("h"), "member": world["members"][0], "points": 1}
    )
    assert isinstance(r, Error | Result)  # refused (no points) or not, its batch ran
    await till.close()
    async with http.get(node + "/metrics") as resp:
        text = await resp.text()
    counts = {
        line.split('phase="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_ledger_batch_seconds_count")
    }
    assert counts.keys() == {"queue", "statements", "commit"} and min(counts.values()) >= 1
