"""Races around a member's feed and a session's subscriptions, found in review: each of these
could leave a session without the pushes it asked for, or with pushes it no longer wanted."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from protocol.codec import decode_server
from protocol.messages import BalanceChanged, Result
from tests.conftest import REDIS_URL
from tests.live_support import eventually, pos, sale
from tests.support import running_node, settings_for


class Sink:
    """A subscriber that records the versions it was sent."""

    def __init__(self) -> None:
        self.versions: list[int] = []

    def send_framed(self, framed: bytes) -> None:
        payload = framed[framed.index(b"{") :]  # after the websocket frame header
        frame = decode_server(payload)
        if isinstance(frame, BalanceChanged):
            self.versions.append(frame.version)


async def _numsub(node: Any, member: str) -> int:
    channel = node.keys.member_channel(member)
    return dict(await node.redis.pubsub_numsub(channel))[channel.encode()]


async def test_rejoin_as_the_linger_closes_keeps_the_channel(http, pg_dsn, redis_prefix, world):
    """The feed's linger fired in the same loop turn as a command that joined the member again:
    the new feed's SUBSCRIBE went out before the old feed's UNSUBSCRIBE, so Redis stopped
    sending the member's changes and no gap was ever seen."""
    m = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        node, feeds = rn.node, rn.node.feeds
        till = await pos(http, rn.url, world["merchant"])
        first, second = Sink(), Sink()
        await feeds.join(m, first, None)
        feeds.leave(m, first)  # the linger is armed
        feed = feeds._feeds[m]
        rejoin = asyncio.create_task(feeds.join(m, second, None))  # scheduled first ...
        assert feed.linger is not None
        feed.linger.cancel()
        feeds._close_feed(feed)  # ... then the timer's callback runs
        await rejoin
        done = await sale(till, m)
        version = done.data.balance.version
        await eventually(lambda: version in second.versions, what="the change after the rejoin")
        assert await _numsub(node, m) == 1
        await till.close()


async def test_a_dropped_channel_is_subscribed_again_and_the_gap_filled(
    http, pg_dsn, redis_prefix, world
):
    """Whatever the order of a closing feed's UNSUBSCRIBE and a new one's SUBSCRIBE, a live
    feed whose channel Redis dropped subscribes again and reads what it missed."""
    m = world["members"][1]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        node, feeds = rn.node, rn.node.feeds
        till = await pos(http, rn.url, world["merchant"])
        sink = Sink()
        await feeds.join(m, sink, None)
        await feeds._pubsub.unsubscribe(node.keys.member_channel(m))  # as a stray UNSUBSCRIBE
        done = await sale(till, m)  # may be published while the channel is dropped
        version = done.data.balance.version
        await eventually(lambda: version in sink.versions, what="the change, filled")
        await eventually(lambda: feeds._feeds[m].rechecking is False, what="the re-check")
        assert await _numsub(node, m) == 1
        later = await sale(till, m)  # and the channel carries the next one
        await eventually(lambda: later.data.balance.version in sink.versions)
        assert sink.versions == sorted(set(sink.versions))
        await till.close()


async def test_pipelined_subscription_commands_take_effect_in_order(
    http, pg_dsn, redis_prefix, world
):
    """A subscribe still opening its feed when the session's next command (unsubscribe, or a
    subscribe with replace) ran: the session stayed in the feed without listing it, so it got
    pushes after unsubscribing, outlived its close in the feed, and got past the limit."""
    a, b, c = world["members"]
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_subscriptions=1)
    async with running_node(settings, redis_prefix) as rn:
        node, feeds = rn.node, rn.node.feeds
        till = await pos(http, rn.url, world["merchant"])
        seller = await pos(http, rn.url, world["merchant"], "t2")
        frames = [
            {"id": "s1", "type": "subscribe", "member": a},
            {"id": "u1", "type": "unsubscribe", "member": a},
            {"id": "s2", "type": "subscribe", "member": b},
            {"id": "s3", "type": "subscribe", "member": c, "replace": True},
        ]
        replies = await asyncio.gather(*(till.request(f) for f in frames))
        assert all(isinstance(r, Result) for r in replies), replies
        answered = [
            f.id for f in till.frames if isinstance(f, Result) and f.id in {"s1", "u1", "s2", "s3"}
        ]
        assert answered == ["s1", "u1", "s2", "s3"]
        server = next(s for s in node.sessions if s.principal.terminal == "t1")
        assert server.subscriptions == {c}
        watching = {m for m, f in feeds._feeds.items() if server in f.sessions}
        assert watching == {c}
        for m in (a, b):
            await sale(seller, m)
        last = await sale(seller, c)
        got = await till.next_change()
        assert (got.member, got.version) == (c, last.data.balance.version)
        ref = weakref.ref(server)
        del server
        await till.close()
        await eventually(
            lambda: not any(ref() in f.sessions for f in feeds._feeds.values()),
            what="the closed session out of every feed",
        )
        await seller.close()


async def test_a_failed_re_subscribe_keeps_the_subscription(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in review: a re-subscribe (the gap fill a client sends) that failed with a
    retryable error dropped the session's subscription on the server, while the client kept
    it: pushes stopped with nothing said."""
    from gateway.errors import StoreUnavailable
    from protocol.messages import Error

    m = world["members"][2]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        till = await pos(http, rn.url, world["merchant"])
        seller = await pos(http, rn.url, world["merchant"], "t2")
        sub = await till.request({"type": "subscribe", "member": m})
        assert isinstance(sub, Result)
        await sale(seller, m)
        first = await till.next_change()
        reads = rn.node.feeds._reads

        async def unavailable(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise StoreUnavailable("PostgreSQL unavailable during history read")

        monkeypatch.setattr(reads, "history", unavailable)
        failed = await till.request({"type": "subscribe", "member": m, "since": 0})
        assert isinstance(failed, Error) and failed.retryable
        monkeypatch.undo()
        done = await sale(seller, m)
        later = await till.next_change()
        assert later.version == done.data.balance.version == first.version + 1
        await till.close()
        await seller.close()


async def test_a_subscribe_never_answers_older_than_this_node_already_replied(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: the sale's reply said version n+1, and a subscribe (or cashier_view)
    on the same node before its publish reached the feed answered version n: for the whole
    outage when the publish had failed."""
    m = world["members"][2]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        node, feeds = rn.node, rn.node.feeds
        till = await pos(http, rn.url, world["merchant"])
        watching = Sink()
        opened = (await feeds.join(m, watching, None)).balance
        node.publisher.breaker.trip()  # this change's publish fails
        done = await sale(till, m)
        version = done.data.balance.version
        assert version == opened.version + 1
        balance = (await feeds.join(m, Sink(), None)).balance
        assert balance.version == version, "the subscribe answered older than the sale's reply"
        assert watching.versions == [version]  # the feed delivered it, in order
        await till.close()


async def test_a_gap_the_channel_closes_during_the_last_retry_ends_quietly(
    pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in review: with the ledger unreadable, a gap filler whose last pause saw the
    channel bring the missing change took ``max()`` of the now empty pending changes and died
    with ValueError. It now ends quietly: the session got every change, and no resync."""
    from gateway.errors import GatewayError
    from gateway.fanout import feeds as feeds_module
    from protocol.codec import encode
    from protocol.codes import ErrorCode
    from protocol.messages import Cause

    monkeypatch.setattr(feeds_module, "GAP_RETRY_PAUSE", 0.001)
    m = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        feeds = rn.node.feeds
        sink = Sink()
        await feeds.join(m, sink, None)
        feed = feeds._feeds[m]
        v = feed.version

        def change(version: int) -> BalanceChanged:
            return BalanceChanged(
                member=m, posted=version, held=0, available=version, version=version,
                cause=Cause(kind="earn", op=f"op-{version}"), at=1,
            )  # fmt: skip

        reads = 0

        async def unreadable(*_: Any) -> Any:
            nonlocal reads
            reads += 1
            if reads == feeds_module.GAP_READS:  # the channel brings it meanwhile
                loop = asyncio.get_running_loop()
                loop.call_soon(
                    feed.pending.__setitem__, v + 1, (change(v + 1), encode(change(v + 1)))
                )
                loop.call_soon(feeds._advance, feed)
            raise GatewayError("the ledger is down", ErrorCode.UNAVAILABLE)

        monkeypatch.setattr(feeds._reads, "history", unreadable)
        resyncs = feeds.resyncs
        feed.pending[v + 2] = (change(v + 2), encode(change(v + 2)))
        feeds._advance(feed)
        filler = feed.filler
        assert filler is not None
        await asyncio.wait_for(filler, 5)  # raised ValueError before
        assert sink.versions == [v + 1, v + 2] and feeds.resyncs == resyncs


async def test_a_join_that_outlasts_the_linger_keeps_its_feed(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in review: a resume whose history read was slow (a pool wait, a stalled
    PostgreSQL) while the feed's only other watcher left: the linger closed the feed and
    unsubscribed its channel under the join, which then added its session to that closed
    feed. It was answered as recovered, and never got another change."""
    from gateway.fanout import feeds as feeds_module

    monkeypatch.setattr(feeds_module, "LINGER", 0.2)
    m = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        feeds = rn.node.feeds
        till = await pos(http, rn.url, world["merchant"])
        await sale(till, m)
        await sale(till, m)
        first, second = Sink(), Sink()
        opened = (await feeds.join(m, first, None)).balance
        real = feeds._reads.history

        async def slow_history(member: str, since: int, limit: int) -> Any:
            await asyncio.sleep(0.6)
            return await real(member, since, limit)

        monkeypatch.setattr(feeds._reads, "history", slow_history)
        joining = asyncio.create_task(feeds.join(m, second, opened.version - 1))
        await asyncio.sleep(0.05)
        feeds.leave(m, first)  # the only watcher leaves while the join reads: linger armed
        joined = await joining
        assert joined.recovered and [c.version for c in joined.missed] == [opened.version]
        monkeypatch.setattr(feeds._reads, "history", real)
        assert second in feeds._feeds[m].sessions
        done = await sale(till, m)
        version = done.data.balance.version
        await eventually(lambda: version in second.versions, what="the next change")
        assert await _numsub(rn.node, m) == 1
        await till.close()


async def test_reconnects_during_a_database_outage_keep_one_check_per_feed(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in review: each fan-out reconnect started one more check per feed, each retrying
    PostgreSQL until it answered; a Redis connection flapping during a PostgreSQL outage piled
    them up. A new check now replaces the one still retrying."""
    from gateway.errors import StoreUnavailable

    m = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        feeds = rn.node.feeds
        await feeds.join(m, Sink(), None)

        async def down(member: str) -> Any:
            raise StoreUnavailable("PostgreSQL unreachable")

        monkeypatch.setattr(feeds._reads, "balance_from_db", down)
        for _ in range(5):  # five reconnects in a row
            feeds._check_all()
            await asyncio.sleep(0.02)
        checks = [
            t for t in feeds._tasks if not t.done() and t.get_coro().__qualname__ == "Feeds._check"
        ]
        assert len(checks) == 1 and checks[0] is feeds._feeds[m].checker
