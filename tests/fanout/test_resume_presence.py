"""A resume (`subscribe` with `since`) that also asks for presence waited for the presence read
after it had worked out the missed changes: a change delivered meanwhile was in neither the
missed list nor a push to the session, which was told the newer balance: a silent gap (found
in review; failed on the old code)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from protocol import encode
from protocol.client import ClientSession, Resync
from protocol.codec import decode_server
from protocol.messages import BalanceChanged, Presence, Result
from tests.conftest import REDIS_URL
from tests.live_support import app, next_of, pos, sale
from tests.support import running_node, settings_for


class Sink:
    def __init__(self) -> None:
        self.versions: list[int] = []

    def send_framed(self, framed: bytes) -> None:
        frame = decode_server(framed[framed.index(b"{") :])
        if isinstance(frame, BalanceChanged):
            self.versions.append(frame.version)


async def test_a_resume_with_presence_never_skips_a_change_silently(
    http, pg_dsn, redis_prefix, world
):
    """join(since=..., presence=True) computes ``missed`` before it awaits the presence read
    and returns the feed's balance after it: a change delivered in between (committed on this
    node: deliver_committed; or from the channel) is neither in ``missed`` nor pushed to the
    joining session, which was not in the feed yet."""
    m = world["members"][0]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        feeds = rn.node.feeds
        till = await pos(http, rn.url, world["merchant"])
        other = Sink()
        opened = (await feeds.join(m, other, None)).balance  # the feed is open, no presence yet
        since = opened.version
        await sale(till, m)  # since + 1
        read = feeds.presence_reader
        assert read is not None

        async def presence_then_a_sale(member: str) -> Any:
            got = await read(member)
            await sale(till, m)  # since + 2, committed while the joiner waits on presence
            return got

        feeds.presence_reader = presence_then_a_sale
        joiner = Sink()
        balance, missed, recovered, _, _ = await feeds.join(m, joiner, since, presence=True)
        feeds.presence_reader = read
        seen = [c.version for c in missed] + joiner.versions
        assert recovered
        assert balance.version == since + 2
        # the session was told version since+2 is current, but never got since+2 itself
        assert seen == list(range(since + 1, balance.version + 1)), (seen, balance.version)
        await till.close()


async def test_a_resume_on_another_node_never_answers_older_than_since(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in review: a till saw v(n+1) from node A (which delivers its own changes at
    once), A's publish never reached Redis, and the till resumed on node B with since=n+1.
    B answered recovered=true, nothing missed, balance v(n): older than since, as complete.
    B now reads the ledger up to since first; past the ledger it says recovered=false."""

    m = world["members"][0]
    async with (
        running_node(settings_for(pg_dsn, REDIS_URL, "na"), redis_prefix) as a,
        running_node(settings_for(pg_dsn, REDIS_URL, "nb"), redis_prefix) as b,
    ):
        watcher = await pos(http, b.url, world["merchant"], "tb")  # B's feed is open at v(n)
        opened = await watcher.request({"type": "subscribe", "member": m})
        assert isinstance(opened, Result)
        n = opened.data.balance.version
        till = await pos(http, a.url, world["merchant"], "ta")
        assert isinstance(await till.request({"type": "subscribe", "member": m}), Result)

        async def lost(entries: Any, epoch: str = "") -> None:
            return None  # A dies before its publish leaves

        monkeypatch.setattr(a.node.publisher, "publish", lost)
        done = await sale(till, m)
        seen = (await next_of(till, BalanceChanged)).version
        assert seen == done.data.balance.version == n + 1
        await till.close()

        again = await pos(http, b.url, world["merchant"], "ta")
        r = await again.request({"type": "subscribe", "member": m, "since": seen})
        assert isinstance(r, Result)
        assert (r.data.recovered, r.data.balance.version, r.data.missed) == (True, seen, [])
        ahead = await again.request({"type": "subscribe", "member": m, "since": seen + 5})
        assert isinstance(ahead, Result)
        assert (ahead.data.recovered, ahead.data.balance.version) == (False, seen)
        await again.close()
        await watcher.close()


async def test_cashier_view_keeps_the_presence_the_register_asked_for(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: ``cashier_view`` subscribed again without presence, which turned off
    the presence pushes the till had asked for (while the client helper still counted on
    them)."""

    m = world["members"][1]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        till = await pos(http, rn.url, world["merchant"])
        r = await till.request({"type": "subscribe", "member": m, "presence": True})
        assert isinstance(r, Result) and r.data.presence == []
        assert isinstance(await till.request({"type": "cashier_view", "member": m}), Result)
        phone = await app(http, rn.url, world["merchant"], m)
        try:
            p = await next_of(till, Presence, 2.0)
        except TimeoutError:
            p = None
        assert p is not None, "presence pushes stopped after cashier_view"
        await phone.close()
        await till.close()


async def test_a_resume_ahead_of_a_lagging_node_is_never_an_older_truth(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in review of the fix above: the catch-up read at most ``max_recovery`` changes,
    and a feed still behind ``since`` answered recovered=false with its older balance, which
    the client helper then took as the truth. The node reads on until it reaches ``since``."""

    m = world["members"][0]
    async with (
        running_node(settings_for(pg_dsn, REDIS_URL, "na"), redis_prefix) as a,
        running_node(settings_for(pg_dsn, REDIS_URL, "nb", max_recovery=2), redis_prefix) as b,
    ):
        watcher = await pos(http, b.url, world["merchant"], "tb")  # B's feed open at v(n)
        opened = await watcher.request({"type": "subscribe", "member": m})
        assert isinstance(opened, Result)
        n = opened.data.balance.version

        async def lost(entries: Any, epoch: str = "") -> None:
            return None  # no publish reaches Redis (yet): B's feed stays at v(n)

        monkeypatch.setattr(a.node.publisher, "publish", lost)
        monkeypatch.setattr(b.node.publisher, "publish", lost)
        cs = ClientSession()
        till = await pos(http, a.url, world["merchant"], "ta")
        cs.receive(encode(await till.request(json.loads(cs.subscribe(m)))))
        for _ in range(3):
            cs.receive(encode(await sale(till, m)))
        seen = cs.last_versions[m]
        assert seen == n + 3
        await till.close()

        again = await pos(http, b.url, world["merchant"], "ta")
        [frame] = cs.resume()
        reply = await again.request(json.loads(frame))
        assert isinstance(reply, Result)
        assert (reply.data.recovered, reply.data.balance.version) == (True, seen)
        assert not [e for e in cs.receive(encode(reply)) if isinstance(e, Resync)]
        await again.close()
        await watcher.close()


async def test_presence_turned_off_after_a_cashier_view_stays_off(
    http, pg_dsn, redis_prefix, world, monkeypatch
):
    """Found in a review of the fix above: the view read whether the till watched presence
    before its turn among the session's subscription commands, so a ``subscribe`` turning
    presence off, sent after the view but taking effect first, was undone by the view."""

    m = world["members"][1]
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as rn:
        till = await pos(http, rn.url, world["merchant"])
        r = await till.request({"type": "subscribe", "member": m, "presence": True})
        assert isinstance(r, Result)
        since = r.data.balance.version
        await sale(till, m)
        reads = rn.node.reads
        real_history = reads.history

        async def slow_history(*a: Any, **kw: Any) -> Any:  # a busy PostgreSQL
            await asyncio.sleep(0.5)
            return await real_history(*a, **kw)

        monkeypatch.setattr(reads, "history", slow_history)
        await till.send_raw(json.dumps({"type": "cashier_view", "id": "c1", "member": m}))
        off = await till.request(
            {"type": "subscribe", "id": "s2", "member": m, "since": since, "presence": False}
        )
        assert isinstance(off, Result)
        await asyncio.sleep(0.3)
        monkeypatch.setattr(reads, "history", real_history)
        phone = await app(http, rn.url, world["merchant"], m)
        got = None
        try:
            while got is None:
                f = await asyncio.wait_for(till.pushes.get(), 1.5)
                got = f if isinstance(f, Presence) else None
        except TimeoutError:
            pass
        assert got is None, "presence pushed to a till whose last subscribe turned it off"
        await phone.close()
        await till.close()
