"""The node's one heartbeat (gateway/sessions/heartbeat.py): every live session pinged once per
walk, silent ones dropped with 3003, and the walk yields between chunks of sessions."""

from __future__ import annotations

import asyncio

from gateway.sessions import heartbeat
from gateway.sessions.heartbeat import PING, Heartbeat
from protocol.codes import CloseCode

LOG: list[tuple[str, int]] = []


class Transport:
    def __init__(self, i: int) -> None:
        self.i = i
        self.aborted = False

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        assert data == PING
        LOG.append(("ping", self.i))

    def abort(self) -> None:
        self.aborted = True
        LOG.append(("abort", self.i))


class FakeSession:
    def __init__(self, i: int, seen: int) -> None:
        self.transport = Transport(i)
        self.closing = False
        self.seen = seen
        self.on_close: int | None = None
        self.principal = None


async def test_a_walk_pings_the_live_drops_the_silent_and_lets_other_work_run():
    LOG.clear()
    n = heartbeat.CHUNK * 3 + 5
    sessions = [FakeSession(i, seen=0 if i % 50 == 0 else 10) for i in range(n)]
    hb = Heartbeat(lambda: sessions, interval=15.0)
    hb.tick = 10  # this walk is tick 11: sessions last seen at tick 0 are silent for too long

    async def other_work() -> None:
        for k in range(4):
            LOG.append(("other", k))
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await hb.beat(spread=0.01)
    await other
    pinged = [i for kind, i in LOG if kind == "ping"]
    aborted = [i for kind, i in LOG if kind == "abort"]
    assert sorted(pinged) == [i for i in range(n) if i % 50]
    assert aborted == [i for i in range(n) if i % 50 == 0]
    assert all(s.on_close == CloseCode.HEARTBEAT_TIMEOUT for s in sessions if s.closing)
    assert hb.reaped == len(aborted)
    first_other = LOG.index(("other", 0))
    # the other task ran after the walk's first chunk and before its last one
    assert first_other > 0
    assert any(kind in ("ping", "abort") for kind, _ in LOG[first_other:])


async def test_a_token_expiring_during_the_walk_is_seen_when_its_session_is_visited():
    """Found in review: the walk compared every token with the time the walk began, though it
    is spread over the whole interval; a token that expired before its session's visit was
    missed until the next walk (about two heartbeats late)."""
    import time

    closed: list[int] = []

    class Expiring(FakeSession):
        def close_soon(self, code: int, reason: str) -> None:
            closed.append(self.transport.i)

    class Principal:
        expires = time.time() + 0.2

    sessions = [Expiring(i, seen=10) for i in range(2 * heartbeat.CHUNK)]
    sessions[-1].principal = Principal()  # type: ignore[assignment]
    hb = Heartbeat(lambda: sessions, interval=1.0)
    hb.tick = 10
    await hb.beat(spread=1.0)  # the second chunk is visited about 0.5 s in
    assert closed == [2 * heartbeat.CHUNK - 1]
