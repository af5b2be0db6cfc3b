"""Presence across nodes: a POS sees the member's app/web sessions come and go, and the
per-member session limit holds across nodes."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from gateway import auth
from gateway.store.keys import Keys
from protocol.codes import CloseCode
from protocol.messages import Error, Presence, Result, Welcome
from tests.conftest import REDIS_URL
from tests.live_support import app, next_of, pos
from tests.support import SECRET, WsClient, app_token, running_node, settings_for


async def test_pos_sees_app_and_web_come_and_go_across_nodes(http, pg_dsn, redis_prefix, world):
    member = world["members"][0]
    async with (
        running_node(settings_for(pg_dsn, REDIS_URL, "pa"), redis_prefix) as na,
        running_node(settings_for(pg_dsn, REDIS_URL, "pb"), redis_prefix) as nb,
    ):
        till = await pos(http, na.url, world["merchant"])
        r = await till.request({"type": "subscribe", "member": member, "presence": True})
        assert isinstance(r, Result) and r.data.presence == []
        phone = await app(http, nb.url, world["merchant"], member)
        p = await next_of(till, Presence)
        assert p.member == member
        assert [(x.channel, x.node) for x in p.online] == [("app", "pb")]
        seq = p.seq
        web = await WsClient.connect(http, na.url)
        token = auth.mint_app(SECRET, world["merchant"], member, channel="web")
        assert isinstance(await web.hello(token), Welcome)
        p = await next_of(till, Presence)
        assert sorted(x.channel for x in p.online) == ["app", "web"] and p.seq > seq
        # a second POS subscribing later gets the current list in its reply
        other = await pos(http, nb.url, world["merchant"], "t2")
        r = await other.request({"type": "subscribe", "member": member, "presence": True})
        assert sorted(x.channel for x in r.data.presence) == ["app", "web"]
        assert r.data.presence_seq == p.seq  # the list's seq, to order it against the pushes
        # sessions without presence get no presence pushes
        plain = await pos(http, na.url, world["merchant"], "t3")
        r = await plain.request({"type": "subscribe", "member": member})
        assert r.data.presence is None and r.data.presence_seq is None
        await phone.close()
        p = await next_of(till, Presence)
        assert [x.channel for x in p.online] == ["web"]
        await web.close()
        p = await next_of(till, Presence)
        assert p.online == []
        assert not any(isinstance(f, Presence) for f in plain.frames)
        for c in (till, other, plain):
            await c.close()


async def test_entries_of_a_dead_node_expire_and_are_announced(http, pg_dsn, redis_prefix, world):
    member = world["members"][1]
    settings = settings_for(pg_dsn, REDIS_URL, "pc", heartbeat=0.2)
    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with running_node(settings, redis_prefix) as node:
            till = await pos(http, node.url, world["merchant"])
            phone = await app(http, node.url, world["merchant"], member)
            # an entry left by a node that died (kill -9): nobody removes it but expiry
            gone = int(time.time() * 1000) + 300
            await r.hset(Keys(redis_prefix).presence(member), "dead-1", f"app|dead|{gone}")
            reply = await till.request({"type": "subscribe", "member": member, "presence": True})
            assert sorted(x.node for x in reply.data.presence) == ["dead", "pc"]
            p = await next_of(till, Presence)  # the sweep drops it and announces
            assert [x.node for x in p.online] == ["pc"]
            # the live session's own entry is refreshed, not expired
            time_left = 1.0
            start = time.monotonic()
            while time.monotonic() - start < time_left:
                peers, _ = await node.node.presence.online(member)
                assert [x.node for x in peers] == ["pc"]
                await asyncio.sleep(0.1)
            await phone.close()
            await till.close()
    finally:
        await r.aclose()


async def test_member_session_limit_holds_across_nodes(http, pg_dsn, redis_prefix, world):
    member = world["members"][2]
    a = settings_for(pg_dsn, REDIS_URL, "la", max_sessions_per_member=2)
    b = settings_for(pg_dsn, REDIS_URL, "lb", max_sessions_per_member=2)
    async with running_node(a, redis_prefix) as na, running_node(b, redis_prefix) as nb:
        first = await app(http, na.url, world["merchant"], member)
        second = await app(http, nb.url, world["merchant"], member)
        third = await WsClient.connect(http, na.url)
        refused = await third.hello(app_token(world["merchant"], member))  # not welcomed:
        assert isinstance(refused, Error) and refused.code == "member_sessions_full"  # told why,
        assert refused.retryable  # then closed
        assert await third.wait_closed() == CloseCode.MEMBER_SESSIONS_FULL
        # POS sessions do not count against the member's limit
        till = await pos(http, nb.url, world["merchant"])
        assert isinstance(await till.request({"type": "ping"}), Result)
        # one leaves: a new one fits again (on either node)
        await first.close()
        for _ in range(50):
            peers, _ = await nb.node.presence.online(member)
            if len(peers) == 1:
                break
            await asyncio.sleep(0.05)
        again = await app(http, nb.url, world["merchant"], member)
        await again.close()
        await second.close()
        await till.close()


async def test_refresh_covers_every_session_and_member_across_many_pipelines(
    redis_prefix, monkeypatch
):
    """The refresh builds small pipelines (a big one held the event loop for 18-25 ms): every
    session's entry is renewed and every watched member swept, whatever the chunking."""
    from gateway.auth import Principal
    from gateway.fanout import presence

    monkeypatch.setattr(presence, "REFRESH_CHUNK", 7)
    r = aioredis.Redis.from_url(REDIS_URL)
    keys = Keys(f"{redis_prefix}:rc")
    book = presence.PresenceBook(r, keys, "n1", 10, 15.0, 30.0)
    try:
        members = [f"rc-m{i}" for i in range(30)]
        sessions = [
            (f"s{i}", Principal(kind="app", merchant="m", channel="app", member=members[i]))
            for i in range(23)
        ]
        past = int(time.time() * 1000) - 1000
        for m in members[20:]:  # entries of a dead node, expired: the sweep must drop them
            await r.hset(keys.presence(m), "dead-1", f"app|dead|{past}")
        for sid, p in sessions:
            assert await book.join(sid, p)
        await book.refresh(sessions, members, spread=0.05)
        now = int(time.time() * 1000)
        for sid, p in sessions:
            entry = await r.hget(keys.presence(p.member), sid)
            assert entry is not None, sid
            assert int(entry.decode().rpartition("|")[2]) > now
        for m in members[20:]:
            assert await r.hget(keys.presence(m), "dead-1") is None, m
    finally:
        found = [k async for k in r.scan_iter(match=f"{redis_prefix}:rc:*", count=1000)]
        if found:
            await r.delete(*found)
        await r.aclose()


async def test_refresh_does_not_bring_back_sessions_that_left_meanwhile(redis_prefix, monkeypatch):
    """Found in review: the refresh wrote back the entries of sessions that closed after it
    took its list, so a POS saw a closed app online for about three heartbeats."""
    from gateway.auth import Principal
    from gateway.fanout import presence

    monkeypatch.setattr(presence, "REFRESH_CHUNK", 7)
    r = aioredis.Redis.from_url(REDIS_URL)
    keys = Keys(f"{redis_prefix}:gh")
    book = presence.PresenceBook(r, keys, "n1", 100, 15.0, 30.0)
    try:
        sessions = [
            (f"s{i}", Principal(kind="app", merchant="m", channel="app", member=f"gh-m{i % 3}"))
            for i in range(23)
        ]
        for sid, p in sessions:
            assert await book.join(sid, p)
        refresh = asyncio.create_task(book.refresh(sessions, [], spread=0.2))
        await asyncio.sleep(0)  # the first pipeline is on its way
        gone = sessions[:3] + sessions[10:13]  # in that pipeline, and in a later one
        for sid, p in gone:
            book.leave(sid, p)
        await refresh
        await book.close()  # waits for the background deletes
        for sid, p in sessions:
            entry = await r.hget(keys.presence(p.member), sid)
            assert (entry is None) == ((sid, p) in gone), sid
    finally:
        found = [k async for k in r.scan_iter(match=f"{redis_prefix}:gh:*", count=1000)]
        if found:
            await r.delete(*found)
        await r.aclose()


async def test_a_kept_presence_list_is_read_afresh_after_a_fanout_reconnect(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: a node whose tills watched a member's balance only kept the presence
    list its feed had seen; announcements made while its fan-out connection was down were
    lost, and the next till to ask for presence there was told a closed app was online."""
    from tests.live_support import eventually

    member = world["members"][0]
    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        async with (
            running_node(settings_for(pg_dsn, REDIS_URL, "sa"), redis_prefix) as na,
            running_node(settings_for(pg_dsn, REDIS_URL, "sb"), redis_prefix) as nb,
        ):
            till = await pos(http, na.url, world["merchant"])  # the balance only
            assert isinstance(await till.request({"type": "subscribe", "member": member}), Result)
            watcher = await pos(http, nb.url, world["merchant"], "tw")
            await watcher.request({"type": "subscribe", "member": member, "presence": True})
            phone = await app(http, nb.url, world["merchant"], member)
            await next_of(watcher, Presence)
            feeds = na.node.feeds
            await eventually(lambda: feeds._feeds[member].peers, 5, "A keeps the app online")
            # A's fan-out connection drops; the app closes meanwhile
            sock = feeds._pubsub.connection._writer.get_extra_info("sockname")
            reconnects = feeds.reconnects
            await r.execute_command("CLIENT", "KILL", "ADDR", f"{sock[0]}:{sock[1]}")
            await phone.close()
            assert (await next_of(watcher, Presence)).online == []
            await eventually(lambda: feeds.reconnects > reconnects, 10, "fan-out reconnect")
            await asyncio.sleep(0.5)
            other = await pos(http, na.url, world["merchant"], "t2")
            reply = await other.request({"type": "subscribe", "member": member, "presence": True})
            assert isinstance(reply, Result) and reply.data.presence == []
            for c in (till, watcher, other):
                await c.close()
    finally:
        await r.aclose()


async def test_a_failed_presence_read_is_not_kept_as_the_members_list(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: a presence read that failed (Redis unavailable for a moment) answered
    nobody online with seq 0, and the feed kept that as the member's list: later tills on the
    node were told nobody was online, with Redis back, until the next announcement."""
    import redis.exceptions

    member = world["members"][1]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        phone = await app(http, rn.url, world["merchant"], member)
        balance_only = await pos(http, rn.url, world["merchant"], "t0")  # opens the feed
        assert isinstance(
            await balance_only.request({"type": "subscribe", "member": member}), Result
        )
        redis_client = rn.node.presence._redis
        real = redis_client.hgetall

        async def down_once(*a: object, **kw: object) -> object:
            redis_client.hgetall = real
            raise redis.exceptions.ConnectionError("Redis unavailable")

        redis_client.hgetall = down_once
        first = await pos(http, rn.url, world["merchant"], "t1")
        r1 = await first.request({"type": "subscribe", "member": member, "presence": True})
        assert isinstance(r1, Result) and r1.data.presence == []  # could not be read
        assert r1.data.presence_seq == -1  # and says so: below every real seq
        second = await pos(http, rn.url, world["merchant"], "t2")
        r2 = await second.request({"type": "subscribe", "member": member, "presence": True})
        assert isinstance(r2, Result) and [p.channel for p in r2.data.presence] == ["app"]
        assert r2.data.presence_seq > 0
        for c in (phone, balance_only, first, second):
            await c.close()
