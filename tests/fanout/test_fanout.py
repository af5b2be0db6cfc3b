"""Subscriptions, resume, broadcast and back-pressure on in-process nodes (real PG and Redis)."""

from __future__ import annotations

import asyncio

from gateway.fanout.broadcast import publish_notice
from gateway.store.keys import Keys
from protocol.codes import CloseCode
from protocol.messages import BalanceChanged, Error, Notice, Result
from tests.conftest import REDIS_URL
from tests.live_support import (
    app,
    changes_until,
    eventually,
    next_of,
    pos,
    sale,
)
from tests.support import running_node, settings_for


async def test_pos_subscribe_replace_moves_to_next_customer(http, pg_dsn, redis_prefix, world):
    a, b = world["members"][:2]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as node:
        till = await pos(http, node.url, world["merchant"])
        other = await pos(http, node.url, world["merchant"], "t2")
        assert isinstance(await till.request({"type": "subscribe", "member": a}), Result)
        r = await till.request({"type": "subscribe", "member": b, "replace": True})
        assert isinstance(r, Result) and r.data.member == b
        await sale(other, a)  # the previous customer: no longer watched
        done = await sale(other, b)
        change = await next_of(till, BalanceChanged)
        assert change.member == b and change.version == done.data.balance.version
        assert all(
            getattr(f, "member", b) == b for f in till.frames if isinstance(f, BalanceChanged)
        )
        # unsubscribe stops the pushes for that member
        assert isinstance(await till.request({"type": "unsubscribe", "member": b}), Result)
        ping = await till.request({"type": "ping"})
        assert isinstance(ping, Result)
        await sale(other, b)
        await asyncio.sleep(0.2)
        assert till.pushes.empty()
        await till.close()
        await other.close()


async def test_several_members_up_to_the_limit(http, pg_dsn, redis_prefix, world):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_subscriptions=2)
    a, b, c = world["members"]
    async with running_node(settings, redis_prefix) as node:
        till = await pos(http, node.url, world["merchant"])
        for m in (a, b):
            assert isinstance(await till.request({"type": "subscribe", "member": m}), Result)
        again = await till.request({"type": "subscribe", "member": a})  # re-subscribe: allowed
        assert isinstance(again, Result)
        over = await till.request({"type": "subscribe", "member": c})
        assert isinstance(over, Error) and over.code == "too_many_subscriptions"
        replaced = await till.request({"type": "subscribe", "member": c, "replace": True})
        assert isinstance(replaced, Result)
        await till.close()


async def test_app_session_watches_only_its_member(http, pg_dsn, redis_prefix, world):
    a, b = world["members"][:2]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as node:
        phone = await app(http, node.url, world["merchant"], a)
        for m in (b, world["foreign"]):
            r = await phone.request({"type": "subscribe", "member": m})
            assert isinstance(r, Error) and r.code == "forbidden"
        till = await pos(http, node.url, world["other_merchant"])
        r = await till.request({"type": "subscribe", "member": a})
        assert isinstance(r, Error) and r.code == "member_not_found"  # as if it did not exist
        await phone.close()
        await till.close()


async def test_late_subscriber_gets_missed_changes_or_recovered_false(
    http, pg_dsn, redis_prefix, world
):
    a = world["members"][0]
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_recovery=3)
    async with running_node(settings, redis_prefix) as node:
        till = await pos(http, node.url, world["merchant"])
        first = await sale(till, a)
        v0 = first.data.balance.version
        for _ in range(2):
            last = await sale(till, a)
        # The reply's balance is what this node has delivered so far (a change committed a
        # moment ago may still be on its way, and then follows as a push): wait until the sales
        # were published, so the reply is the newest balance.
        await node.node.ledger.published()
        phone = await app(http, node.url, world["merchant"], a)
        r = await phone.request({"type": "subscribe", "member": a, "since": v0})
        v1 = r.data.balance.version
        assert r.data.recovered is True and v1 == last.data.balance.version
        assert [m.version for m in r.data.missed] == list(range(v0 + 1, v1 + 1))
        # too far behind: explicit recovered=false with the current balance, never a silent gap.
        # The session is subscribed: once it has received ``last`` live, this node's feed is
        # there too (else the reply would be what the feed had delivered, maybe still within
        # the recovery window).
        for _ in range(3):
            last = await sale(till, a)
        got = await changes_until(phone, last.data.balance.version)
        r = await phone.request({"type": "subscribe", "member": a, "since": v0})
        assert r.data.recovered is False and r.data.missed == []
        assert r.data.balance.version == last.data.balance.version
        # meanwhile the subscribed session got every later change live, in order, no gap
        nxt = await sale(till, a)
        got += await changes_until(phone, nxt.data.balance.version)
        assert [c.version for c in got] == list(range(v1 + 1, nxt.data.balance.version + 1))
        await till.close()
        await phone.close()


async def test_broadcast_reaches_every_session_of_the_merchant_on_every_node(
    http, pg_dsn, redis_prefix, world
):
    a, b = world["members"][:2]
    async with (
        running_node(settings_for(pg_dsn, REDIS_URL, "na"), redis_prefix) as na,
        running_node(settings_for(pg_dsn, REDIS_URL, "nb"), redis_prefix) as nb,
    ):
        mine = [
            await pos(http, na.url, world["merchant"]),
            await app(http, na.url, world["merchant"], a),
            await app(http, nb.url, world["merchant"], b),
        ]
        stranger = await pos(http, nb.url, world["other_merchant"])
        url = na.url + "/admin/broadcast"
        body = {"merchant": world["merchant"], "kind": "offer", "payload": {"title": "2x coffee"}}
        async with http.post(url, json=body) as r:
            assert r.status == 401
        async with http.post(url, json=body, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        token = na.node.settings.auth.admin_token
        hdr = {"Authorization": f"Bearer {token}"}
        async with http.post(url, json={"merchant": "bad id!"}, headers=hdr) as r:
            assert r.status == 400
        async with http.post(url, json=body, headers=hdr) as r:
            assert r.status == 200
            sent = await r.json()
        assert sent["nodes"] >= 2
        for c in mine:
            n = await next_of(c, Notice)
            assert (n.notice, n.kind, n.payload) == (
                sent["notice"],
                "offer",
                {"title": "2x coffee"},
            )
            assert n.merchant == world["merchant"] and n.at == sent["at"]
        await asyncio.sleep(0.1)
        assert not any(isinstance(f, Notice) for f in stranger.frames)
        for c in [*mine, stranger]:
            await c.close()


async def test_slow_consumer_is_closed_3008_others_keep_receiving(
    http, pg_dsn, redis_prefix, world
):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_queue_bytes=256 * 1024)
    async with running_node(settings, redis_prefix) as node:
        fast = await pos(http, node.url, world["merchant"])
        slow = await pos(http, node.url, world["merchant"], "t-slow")
        slow._reader.cancel()  # stop reading: the socket buffers fill up
        slow_session = next(s for s in node.node.sessions if s.principal.terminal == "t-slow")
        keys = Keys(redis_prefix)
        payload = {"blob": "x" * 30_000}
        count = 300  # ~9 MB: more than the socket buffers and the queue hold
        redis = node.node.redis
        received: list[Notice] = []

        async def read_fast() -> None:
            while len(received) < count:
                received.append(await next_of(fast, Notice, 10))

        reader = asyncio.create_task(read_fast())
        for i in range(count):
            await publish_notice(redis, keys, world["merchant"], "bulk", payload, f"n{i}")
        await asyncio.wait_for(reader, 30)
        assert [n.notice for n in received] == [f"n{i}" for i in range(count)]
        await eventually(lambda: slow_session.on_close == CloseCode.SLOW_CONSUMER, 10, "3008")
        await eventually(lambda: slow_session not in node.node.sessions, 10, "slow session gone")
        assert fast.close_code is None
        await fast.close()
        await slow.ws.close()


async def test_rate_limit_and_close_reason_metrics(http, pg_dsn, redis_prefix, world):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", rate_per_second=5)
    async with running_node(settings, redis_prefix) as node:
        c = await pos(http, node.url, world["merchant"])
        replies = await asyncio.gather(*(c.request({"type": "ping"}) for _ in range(30)))
        limited = [r for r in replies if isinstance(r, Error)]
        assert limited and all(r.code == "rate_limited" and r.retryable for r in limited)
        assert len(replies) - len(limited) >= 10  # the burst (2x rate) went through
        await asyncio.sleep(0.5)
        assert isinstance(await c.request({"type": "ping"}), Result)  # refilled
        await c.close()


async def test_app_subscription_reaches_only_own_member_even_via_replace(
    http, pg_dsn, redis_prefix, world
):
    a, b = world["members"][:2]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as node:
        phone = await app(http, node.url, world["merchant"], a)
        assert isinstance(await phone.request({"type": "subscribe", "member": a}), Result)
        r = await phone.request({"type": "subscribe", "member": b, "replace": True})
        assert isinstance(r, Error) and r.code == "forbidden"
        till = await pos(http, node.url, world["merchant"])
        done = await sale(till, a)
        change = await next_of(phone, BalanceChanged)  # still subscribed to its own member
        assert change.version == done.data.balance.version
        await phone.close()
        await till.close()


async def test_a_change_reaches_this_nodes_watchers_before_its_reply_without_redis(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """The node that commits a change hands it to its own watchers at once, before the reply,
    as Socket.IO's adapter emits to local room members: it used to wait for its own publish to
    come back from Redis (and, with that publish lost, for the outbox relay). The echo that
    does come back is dropped as already seen."""
    member = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        watcher = await app(http, rn.url, world["merchant"], member)
        sub = await watcher.request({"type": "subscribe", "member": member})
        assert isinstance(sub, Result)
        till = await pos(http, rn.url, world["merchant"])
        done = await sale(till, member)  # published as usual: one push, not two
        first = await next_of(watcher, BalanceChanged)
        assert first.version == done.data.balance.version
        published: list[int] = []

        async def lost(entries, epoch=""):  # type: ignore[no-untyped-def]
            published.extend(c.entry.version for c in entries)  # never reaches Redis

        monkeypatch.setattr(rn.node.publisher, "publish", lost)
        done = await sale(till, member)
        # Only this node's own delivery can bring it: the publish never reaches Redis, and the
        # relay's republish goes through the same lost publish.
        assert (await next_of(watcher, BalanceChanged, 1.0)).version == done.data.balance.version
        assert published == [done.data.balance.version]
        monkeypatch.undo()
        done = await sale(till, member)
        assert (await next_of(watcher, BalanceChanged)).version == done.data.balance.version
        await asyncio.sleep(0.2)  # the echoes from Redis are dropped as seen
        left = [watcher.pushes.get_nowait() for _ in range(watcher.pushes.qsize())]
        assert not [f for f in left if isinstance(f, BalanceChanged)], left
        await till.close()
        await watcher.close()
