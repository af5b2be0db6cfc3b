"""PostgreSQL stops answering (a network black hole, a frozen server) without closing its
connections: commands fail within their timeouts instead of hanging, and SIGTERM still ends the
node. Found in review: the ledger lanes had no statement timeout, so a sale waited until TCP gave
up (minutes) and so did the node's shutdown. PostgreSQL sits behind a TCP proxy in this test
that can stop forwarding; the shared server itself is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from protocol.messages import Error, Result
from tests.conftest import REDIS_URL, TIME_FACTOR, create_database, drop_database
from tests.live_support import make_world, pos, sale
from tests.support import NodeProcess, WsClient, free_port

pytestmark = pytest.mark.slow


class FreezingProxy:
    """Forwards TCP to PostgreSQL; while frozen, holds every byte in both directions."""

    def __init__(self) -> None:
        self.port = free_port()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", 5432)
        for r, w in ((cr, sw), (sr, cw)):
            task = asyncio.create_task(self._pipe(r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                await self.flowing.wait()
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                w.close()

    async def close(self) -> None:
        self.flowing.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()


@pytest.fixture
async def stalled_db() -> AsyncIterator[tuple[str, str, FreezingProxy]]:
    name = f"lg_stall_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(name)
    proxy = FreezingProxy()
    await proxy.start()
    try:
        yield dsn, f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}", proxy
    finally:
        await proxy.close()
        await drop_database(name)


@contextlib.asynccontextmanager
async def _till_on_a_stalling_node(
    stalled_db: tuple[str, str, FreezingProxy], redis_prefix: str, name: str, env: dict[str, str]
) -> AsyncIterator[tuple[NodeProcess, WsClient, str]]:
    """A node whose PostgreSQL sits behind the proxy, a register on it and a member with one
    sale done; the proxy flows again and the node is gone afterwards."""
    dsn, via_proxy, proxy = stalled_db
    world = await make_world(dsn)
    node = NodeProcess(via_proxy, REDIS_URL, f"{redis_prefix}:{name}", name, env)
    try:
        await node.wait_ready()
        async with aiohttp.ClientSession() as http:
            till = await pos(http, node.url, world["merchant"])
            member = world["members"][0]
            assert isinstance(await sale(till, member), Result)
            yield node, till, member
            await till.close()
    finally:
        proxy.flowing.set()
        if node.proc.poll() is None:
            node.kill()


async def test_a_silent_postgres_fails_commands_and_sigterm_still_ends_the_node(
    stalled_db, redis_prefix
):
    proxy = stalled_db[2]
    env = {
        "GATEWAY_LEDGER_COMMAND_TIMEOUT": "1",
        "GATEWAY_COMMAND_TIMEOUT": "1",
        "GATEWAY_DRAIN_SECONDS": "2",
    }
    async with _till_on_a_stalling_node(stalled_db, redis_prefix, "stall", env) as (
        node,
        till,
        member,
    ):
        proxy.flowing.clear()  # PostgreSQL stops answering
        started = time.monotonic()
        reply = await till.request(
            {"type": "sale", "op": "stalled-1", "member": member, "total": 500}, timeout=30
        )
        waited = time.monotonic() - started
        assert isinstance(reply, Error) and reply.retryable, reply
        assert reply.code in ("unavailable", "timeout"), reply
        assert waited < 8 * TIME_FACTOR, waited
        started = time.monotonic()
        node.terminate()
        code = await asyncio.to_thread(node.proc.wait, 30)
        elapsed = time.monotonic() - started
        print(f"exit {elapsed:.2f} s after SIGTERM (GATEWAY_DRAIN_SECONDS=2)")
        assert elapsed < 8 * TIME_FACTOR, elapsed
        assert code is not None


async def test_a_session_waiting_on_its_own_slow_commands_is_not_reaped(stalled_db, redis_prefix):
    """Found in review: with 64 commands in flight a session stops being read, so its pongs
    went unseen and the heartbeat closed a live POS as dead (3003) while PostgreSQL was slow."""
    proxy = stalled_db[2]
    env = {
        "GATEWAY_LEDGER_COMMAND_TIMEOUT": "3",
        "GATEWAY_HEARTBEAT_SECONDS": "0.2",
        "GATEWAY_RATE_PER_SECOND": "1000",
    }
    async with _till_on_a_stalling_node(stalled_db, redis_prefix, "busy", env) as (
        _node,
        till,
        member,
    ):
        proxy.flowing.clear()
        replies = asyncio.gather(
            *(
                till.request(
                    {"type": "sale", "op": f"busy-{i}", "member": member, "total": 100},
                    timeout=30,
                )
                for i in range(80)
            ),
            return_exceptions=True,
        )
        await asyncio.sleep(1.5 * TIME_FACTOR)  # seven heartbeats with no frame read
        assert till.close_code is None
        proxy.flowing.set()
        answered = await replies
        assert all(isinstance(r, Result | Error) for r in answered), answered
        assert till.close_code is None
