"""The fan-out connection to Redis is lost (Redis restarted): when it comes back, every feed
compares its version with the ledger and delivers what it missed, without waiting for another
change. Uses a private redis-server on a spare port (never the shared one)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from protocol.messages import BalanceChanged, Result
from tests.conftest import TIME_FACTOR
from tests.gateway.live_support import app, eventually, make_world, next_of, pos, sale
from tests.support import free_port, running_node, settings_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="lg-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.spawn()
        r = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                with contextlib.suppress(Exception):
                    if await r.ping():
                        return
                await asyncio.sleep(0.02)
            raise TimeoutError("private redis did not start")
        finally:
            await r.aclose()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    yield r
    r.stop()
    shutil.rmtree(r.dir, ignore_errors=True)


@pytest.fixture
async def world(pg_dsn: str) -> dict[str, Any]:
    return await make_world(pg_dsn, members=1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_feeds_fill_what_was_missed_while_fanout_was_down(http, pg_dsn, private_redis, world):
    await private_redis.start()
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
        private_redis.stop()  # the fan-out connection (and the cache) are gone
        missed = await sale(till, member)  # committed in PostgreSQL; its publish fails
        assert isinstance(missed, Result) and missed.data.balance.version == v0 + 2
        await asyncio.sleep(0.3 * TIME_FACTOR)
        await private_redis.start()
        await eventually(lambda: feeds.reconnects > reconnects, 15, "fan-out reconnect")
        change = await next_of(phone, BalanceChanged, 10)
        assert change.version == v0 + 2 and change.posted == missed.data.balance.posted
        await phone.close()
        await till.close()
