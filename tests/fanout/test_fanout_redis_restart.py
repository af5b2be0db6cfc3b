"""The fan-out connection to Redis is lost (Redis restarted): when it comes back, every feed
compares its version with the ledger and delivers what it missed, without waiting for another
change. Uses a private redis-server on a spare port (never the shared one)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from protocol.messages import BalanceChanged, Result
from tests.conftest import REDIS_URL, TIME_FACTOR
from tests.live_support import app, eventually, next_of, pos, sale
from tests.servers import PrivateRedis
from tests.support import running_node, settings_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.world(members=1),
]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    yield r
    r.stop()


async def test_feeds_fill_what_was_missed_while_fanout_was_down(http, pg_dsn, private_redis, world):
    private_redis.start()
    member = world["members"][0]
    settings = settings_for(pg_dsn, private_redis.url, "rr")
    # No outbox republish within the test: only the reconnect check can deliver the change.
    settings = replace(settings, ledger=replace(settings.ledger, relay_min_age=600.0))
    async with running_node(settings, "lgr") as node:
        phone = await app(http, node.url, world["merchant"], member)
        till = await pos(http, node.url, world["merchant"])
        v0 = (await phone.request({"type": "subscribe", "member": member})).data.balance.version
        first = await sale(till, member)
        assert (await next_of(phone, BalanceChanged)).version == first.data.balance.version
        feeds = node.node.feeds
        reconnects = feeds.reconnects
        private_redis.kill()  # the fan-out connection (and the cache) are gone
        missed = await sale(till, member)  # committed in PostgreSQL; its publish fails
        assert isinstance(missed, Result) and missed.data.balance.version == v0 + 2
        await asyncio.sleep(0.3 * TIME_FACTOR)
        private_redis.start()
        await eventually(lambda: feeds.reconnects > reconnects, 15, "fan-out reconnect")
        change = await next_of(phone, BalanceChanged, 10)
        assert change.version == v0 + 2 and change.posted == missed.data.balance.posted
        await phone.close()
        await till.close()


async def test_during_a_redis_outage_broadcasts_answer_503_and_the_backlog_is_counted(
    http, pg_dsn, private_redis, world
):
    """Found in review: a broadcast with Redis down was a bare 500, and the outbox backlog
    gauge (gateway_outbox_pending) read 0 throughout the outage, when the backlog grows."""
    private_redis.start()
    member = world["members"][0]
    settings = settings_for(pg_dsn, private_redis.url, "rb")
    async with running_node(settings, "lgb") as node:
        till = await pos(http, node.url, world["merchant"])
        private_redis.kill()
        for _ in range(3):
            assert isinstance(await sale(till, member), Result)  # acknowledged: in PostgreSQL
        async with http.post(
            f"{node.url}/admin/broadcast",
            json={"merchant": world["merchant"], "kind": "offer", "payload": {}},
            headers={"Authorization": "Bearer dev-admin-token"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 503 and body["retryable"] is True, body
        relay = node.node.relay
        await eventually(lambda: relay.pending >= 3, 10, "the backlog counted")
        private_redis.start()
        await eventually(lambda: relay.pending == 0, 15, "the backlog drained")
        await till.close()


async def test_the_backlog_gauge_counts_only_changes_not_published_in_time(
    http, pg_dsn, redis_prefix, world
):
    """gateway_outbox_pending counted every outbox row, including the changes published a
    moment ago whose rows the relay had not deleted yet: some 4,000 at 4,000 changes/s, past
    the backlog alert's 1,000 under a normal load. It counts rows older than min_age now."""
    member = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "bg"), redis_prefix) as node:
        till = await pos(http, node.url, world["merchant"])
        done = await sale(till, member)
        version = done.data.balance.version
        db = await asyncpg.connect(pg_dsn)
        try:  # a change committed just now, its row not deleted yet (as between two passes)
            await db.execute(
                """INSERT INTO outbox (member_id, version, created_at)
                   VALUES ($1, $2, now() + interval '1 hour') ON CONFLICT DO NOTHING""",
                member,
                version,
            )
            relay = node.node.relay
            relay.pending = -1
            await eventually(lambda: relay.pending >= 0, 10, "a relay pass")
            assert relay.pending == 0
        finally:
            await db.execute("DELETE FROM outbox WHERE member_id = $1", member)
            await db.close()
        await till.close()


async def test_the_backlog_gauge_leaves_out_changes_published_before_the_pass(
    http, pg_dsn, redis_prefix, world
):
    """The relay counted the backlog before deleting the rows of published changes (flush): a
    change published right after one pass's flush still had its row at the next pass's count,
    aged the relay interval. With a relay interval longer than min_age (here 2 s and 0.5 s,
    both valid) every change published in time counted as backlog (found in review)."""
    m = world["members"][0]
    base = settings_for(pg_dsn, REDIS_URL, "bg2")
    s = replace(base, ledger=replace(base.ledger, relay_interval=2.0, relay_min_age=0.5))
    async with running_node(s, redis_prefix) as rn:
        relay = rn.node.relay
        till = await pos(http, rn.url, world["merchant"])
        relay.pending = -1
        await eventually(lambda: relay.pending >= 0, 10, "a relay pass")
        assert relay.pending == 0
        await sale(till, m)  # published at once (Redis is up)
        relay.pending = -1
        await eventually(lambda: relay.pending >= 0, 10, "the next relay pass")
        assert relay.pending == 0, "a change published in time counted as backlog"
        await till.close()


async def test_a_feed_closed_during_an_outage_is_not_subscribed_again(
    http, pg_dsn, private_redis, world, monkeypatch
):
    """Found in review: a feed whose linger ended while Redis was down sent an UNSUBSCRIBE
    that failed; redis-py still listed the channel and subscribed it again on reconnect, with
    no feed behind it, for good (one more per member closed in each outage)."""
    from gateway.fanout import feeds as feeds_module
    from tests.fanout.test_feed_races import Sink, _numsub

    monkeypatch.setattr(feeds_module, "LINGER", 0.2)
    private_redis.start()
    m = world["members"][0]
    async with running_node(settings_for(pg_dsn, private_redis.url, "lk"), "lgk") as rn:
        feeds = rn.node.feeds
        watcher = Sink()
        await feeds.join(m, watcher, None)
        reconnects = feeds.reconnects
        private_redis.kill()
        feeds.leave(m, watcher)
        await eventually(lambda: m not in feeds._feeds, what="the feed closed")
        await asyncio.sleep(0.2)  # its UNSUBSCRIBE failed
        private_redis.start()
        await eventually(lambda: feeds.reconnects > reconnects, what="the fan-out reconnect")
        for _ in range(50):
            try:
                subscribed = await _numsub(rn.node, m)
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert subscribed == 0
        channel = rn.node.keys.member_channel(m)
        assert channel not in feeds._pubsub.channels
        assert channel.encode() not in feeds._pubsub.channels


async def test_a_failed_check_after_a_reconnect_is_retried(
    http, pg_dsn, private_redis, world, monkeypatch
):
    """Found in review: after a fan-out reconnect, each feed reads the ledger once for the
    changes published while it was disconnected (they will not be published again). When that
    read failed (the same network blip cutting PostgreSQL), nothing retried: the watchers kept
    an older balance, with no resync, until the member changed again."""
    from gateway.errors import StoreUnavailable
    from tests.fanout.test_feed_races import Sink

    private_redis.start()
    m = world["members"][0]
    sa = settings_for(pg_dsn, private_redis.url, "na")
    sb = settings_for(pg_dsn, private_redis.url, "nb")
    async with running_node(sa, "lgc") as na, running_node(sb, "lgc") as nb:
        feeds = na.node.feeds
        watcher = Sink()
        await feeds.join(m, watcher, None)
        till = await pos(http, nb.url, world["merchant"])
        reads = feeds._reads
        real_balance, real_on_change = reads.balance_from_db, feeds._on_change
        cut = {"on": True, "fails": 0}

        async def unreachable(member: str) -> Any:
            if cut["on"]:
                cut["fails"] += 1
                raise StoreUnavailable("PostgreSQL unreachable")
            return await real_balance(member)

        def lost(channel: Any, data: Any) -> None:  # node A hears nothing while cut off
            if not cut["on"]:
                real_on_change(channel, data)

        monkeypatch.setattr(reads, "balance_from_db", unreachable)
        monkeypatch.setattr(feeds, "_on_change", lost)
        reconnects = feeds.reconnects
        done = await sale(till, m)  # committed and published by B
        version = done.data.balance.version
        await asyncio.sleep(0.3)
        await nb.node.redis.client_kill_filter(_type="pubsub")  # A's fan-out connection too
        await eventually(lambda: feeds.reconnects > reconnects, what="the fan-out reconnect")
        await eventually(lambda: cut["fails"] >= 1, what="the check failing")
        cut["on"] = False
        await eventually(lambda: version in watcher.versions, what="the missed change")
        await till.close()


async def test_a_notice_published_while_a_node_was_cut_off_reaches_its_sessions_once(
    http, pg_dsn, private_redis, world, monkeypatch
):
    """Found in review: notices travel on plain pub/sub, so one published while a node's fan-out
    connection was down never reached that node's sessions, silently. Each notice is now also
    kept in a capped stream, and a node replays what it missed after its reconnect (and never
    delivers one twice)."""
    from gateway.fanout.broadcast import publish_notice
    from protocol.messages import Notice

    private_redis.start()
    merchant = world["merchant"]
    async with running_node(settings_for(pg_dsn, private_redis.url, "nn"), "lgn") as rn:
        node, feeds = rn.node, rn.node.feeds
        till = await pos(http, rn.url, merchant)
        before, _ = await publish_notice(node.redis, node.keys, merchant, "offer", {"n": 1})
        assert (await next_of(till, Notice)).notice == before.notice
        cut = {"on": True}
        handler = feeds._on_broadcast
        assert handler is not None

        def lost(channel: str, data: bytes) -> None:  # the node hears nothing while cut off
            if not cut["on"]:
                handler(channel, data)

        monkeypatch.setattr(feeds, "_on_broadcast", lost)
        missed, _ = await publish_notice(node.redis, node.keys, merchant, "offer", {"n": 2})
        await asyncio.sleep(0.2)
        assert not [f for f in till.frames if isinstance(f, Notice) and f.notice == missed.notice]
        cut["on"] = False
        reconnects = feeds.reconnects
        await node.redis.client_kill_filter(_type="pubsub")
        await eventually(lambda: feeds.reconnects > reconnects, what="the fan-out reconnect")
        assert (await next_of(till, Notice)).notice == missed.notice
        await asyncio.sleep(0.3)
        notices = [f.notice for f in till.frames if isinstance(f, Notice)]
        assert notices == [before.notice, missed.notice]  # each once, in order
        await till.close()


async def test_a_redis_outage_leaves_the_node_ready_and_says_so_in_its_gauge(
    http, pg_dsn, private_redis, world, monkeypatch
):
    """Redis holds only rebuildable state and is shared by every node: readiness follows
    PostgreSQL and the drain, not Redis (else one Redis outage empties the load balancer), and
    the node keeps ``gateway_ready`` and ``gateway_redis_up`` itself, with nobody asking
    ``/readyz``."""
    monkeypatch.setattr("gateway.ops.HEALTH_SECONDS", 0.1)
    private_redis.start()
    member = world["members"][0]
    settings = settings_for(pg_dsn, private_redis.url, "rh")
    async with running_node(settings, "lgh") as node:
        metrics = node.node.metrics
        await eventually(lambda: metrics.redis_up._value.get() == 1, 5, "redis up")
        assert metrics.ready._value.get() == 1
        till = await pos(http, node.url, world["merchant"])
        private_redis.kill()
        await eventually(lambda: metrics.redis_up._value.get() == 0, 5, "redis down seen")
        assert metrics.ready._value.get() == 1  # no /readyz was asked: the node keeps it
        async with http.get(node.url + "/readyz") as resp:
            body = await resp.json()
        assert resp.status == 200 and body["ready"] is True and body["redis"].startswith("down")
        assert isinstance(await sale(till, member), Result)  # and it serves: PostgreSQL
        async with http.get(node.url + "/metrics") as resp:
            text = await resp.text()
        assert "gateway_redis_up 0.0" in text and "gateway_ready 1.0" in text
        private_redis.start()
        await eventually(lambda: metrics.redis_up._value.get() == 1, 15, "redis back")
        await till.close()
