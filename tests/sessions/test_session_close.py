"""A session's close: the commands it already read still reply, the queued frames go out, and
nothing is written after the close frame."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from gateway.sessions import session as session_module
from gateway.sessions.session import Session
from protocol.codes import CloseCode
from protocol.messages import Result, Welcome
from tests.conftest import REDIS_URL, unique
from tests.live_support import eventually, pos
from tests.support import WsClient, pos_token, running_node, settings_for

pytestmark = pytest.mark.world(members=1)


class Transport:
    def __init__(self) -> None:
        self.buffer = 0
        self.writes: list[bytes] = []
        self.closing = False

    def get_write_buffer_size(self) -> int:
        return self.buffer

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


class Ws:
    def __init__(self, t: Transport) -> None:
        self.t = t

    async def close(self, code: int, message: bytes) -> bool:
        self.t.write(b"CLOSE")  # aiohttp writes the close frame into the same transport
        return True


async def test_nothing_is_written_after_the_close_frame(monkeypatch):
    """Found in review: a close gave a backlog 1 s to drain, then wrote its close frame while
    the writer task went on writing the backlog after it (RFC 6455 forbids it)."""
    monkeypatch.setattr(session_module, "FLUSH_TIMEOUT", 0.1)
    t = Transport()
    s = Session(Ws(t), t, "n", 1 << 20, 100)  # type: ignore[arg-type]
    t.buffer = 70_000  # a client reading slowly: above WRITE_HIGH, frames queue
    for i in range(3):
        s.send_raw(b'{"type":"notice","n":%d}' % i)
    assert s.queue and s.writer is not None
    s.close_soon(CloseCode.DRAINING, "node draining")
    await asyncio.sleep(0.3)
    assert t.writes == [b"CLOSE"]
    t.buffer = 0  # the client reads on
    await asyncio.sleep(0.1)
    assert t.writes == [b"CLOSE"] and s.queued_bytes == 0
    s.send_raw(b'{"type":"notice","n":9}')  # and nothing after it either
    assert t.writes == [b"CLOSE"]


async def test_a_close_waits_for_the_replies_of_the_commands_it_read():
    """The replies of commands running when the close began go out before the close frame."""
    t = Transport()
    s = Session(Ws(t), t, "n", 1 << 20, 100)  # type: ignore[arg-type]

    async def command() -> None:
        await asyncio.sleep(0.2)
        s.send_raw(b'{"type":"result","id":"1"}')

    task = asyncio.create_task(command())
    s.inflight.add(task)
    s.close_soon(CloseCode.TOKEN_EXPIRED, "token expired")
    await asyncio.gather(*s.inflight)
    assert len(t.writes) == 2 and t.writes[-1] == b"CLOSE" and b"result" in t.writes[0]


async def test_a_drain_shortens_a_close_already_waiting_for_replies():
    """Found in review: a session already closing (its token expired) when the drain came kept
    its own 12 s grace, past the drain's budget, and was cut by the shutdown without its close
    frame. The shorter grace now holds."""
    t = Transport()
    s = Session(Ws(t), t, "n", 1 << 20, 100)  # type: ignore[arg-type]
    stuck = asyncio.create_task(asyncio.sleep(30))  # a command that will not end in time
    s.inflight.add(stuck)
    s.close_soon(CloseCode.TOKEN_EXPIRED, "token expired")  # 12 s for its reply
    await asyncio.sleep(0.05)
    s.close_soon(CloseCode.DRAINING, "node draining", 0.1)
    await eventually(lambda: t.writes == [b"CLOSE"], timeout=3, what="the close frame")
    assert s.on_close == CloseCode.TOKEN_EXPIRED
    stuck.cancel()


async def test_a_sale_in_flight_when_the_token_expires_gets_its_reply(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: the heartbeat closed a session whose token had just expired with 3501,
    and every frame after that was dropped: a sale read before the expiry was applied, but its
    reply never came, and 3501 tells the till not to reconnect until it has a new token."""
    settings = settings_for(pg_dsn, REDIS_URL, "n1", heartbeat=0.2)
    settings = replace(settings, auth=replace(settings.auth, leeway=0.0))
    merchant, member = world["merchant"], world["members"][0]
    async with running_node(settings, redis_prefix) as rn:
        ledger = rn.node.ledger
        real = ledger.execute

        async def busy(op: Any) -> Any:  # the sale commits 1.5 s after it was read
            await asyncio.sleep(1.5)
            return await real(op)

        ledger.execute = busy  # type: ignore[method-assign]
        c = await WsClient.connect(http, rn.url)
        expires = int(time.time() + 2)  # exp is in whole seconds
        assert isinstance(await c.hello(pos_token(merchant, ttl=expires - time.time())), Welcome)
        await asyncio.sleep(max(0.0, expires - time.time() - 1.0))
        op = unique("op")
        sale = asyncio.create_task(
            c.request({"type": "sale", "op": op, "member": member, "total": 1000}, timeout=6)
        )
        assert await c.wait_closed() == CloseCode.TOKEN_EXPIRED
        ledger.execute = real  # type: ignore[method-assign]
        reply = await sale
        assert isinstance(reply, Result) and reply.data.op == op
        check = await pos(http, rn.url, merchant, "t9")
        out = await check.request({"type": "outcome", "op": op})
        assert isinstance(out, Result) and out.data.ok
        await check.close()
