"""The one set of shared fixtures: a database and a Redis key space of this run's own; an HTTP
client; a running node (``rn``) with a merchant of its own and POS and app sessions on it
(``merchant``, ``clients``); and a world of two merchants and their members (``world``: three
members, or as many as a ``pytest.mark.world(members=N)`` on the test or its module asks).
The helpers they use are in tests/support.py (nodes, clients, tokens), tests/live_support.py
(live sessions) and tests/loyalty_support.py (the programme's commands).

Connection settings come from DATABASE_URL / REDIS_URL (defaults: the local servers). Each
test run creates a database named ``lg_test_<random>`` and drops it at the end, and uses a
Redis key prefix of its own, deleted at the end.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.schema import migrate

if TYPE_CHECKING:
    from tests.loyalty_support import Clients
    from tests.support import RunningNode

BASE_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: Scale every timing-sensitive wait by this factor on slow machines.
TIME_FACTOR = float(os.environ.get("TEST_TIME_FACTOR", "1"))


def _server_dsn(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


#: Seconds after which a test still running prints where it is (pytest-timeout fails it at 120).
STUCK_AFTER = float(os.environ.get("TEST_STUCK_AFTER", "90"))


def _print_stuck_test_stacks() -> None:
    """Print every thread's stack and, through each running event loop, every task's."""
    print("\n=== test still running: stacks ===", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr)
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running():
            loop = obj

            def dump(loop: asyncio.AbstractEventLoop = loop) -> None:
                for task in asyncio.all_tasks(loop):
                    task.print_stack(file=sys.stderr)

            loop.call_soon_threadsafe(dump)


@pytest.fixture(autouse=True)
def _stacks_when_stuck() -> Iterator[None]:
    """A test that hangs in CI says where: its threads' and its asyncio tasks' stacks are
    printed (captured, shown with the failure) before pytest-timeout stops it."""
    timer = threading.Timer(STUCK_AFTER, _print_stuck_test_stacks)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


async def _admin(sql: str) -> None:
    """Run ``sql`` on the test server's maintenance database."""
    admin = await asyncpg.connect(_server_dsn(BASE_DSN, "postgres"))
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


async def create_database(name: str) -> str:
    """Create the database ``name`` on the test server and migrate it; returns its DSN."""
    await _admin(f'CREATE DATABASE "{name}"')
    dsn = _server_dsn(BASE_DSN, name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


async def drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    name = f"lg_test_{uuid.uuid4().hex[:10]}"
    dsn = asyncio.run(create_database(name))
    yield dsn
    asyncio.run(drop_database(name))


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"lgt{uuid.uuid4().hex[:8]}"
    yield prefix

    async def clean() -> None:
        r = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await r.delete(*keys[i : i + 1000])
        finally:
            await r.aclose()

    asyncio.run(clean())


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(REDIS_URL)
    yield r
    await r.aclose()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client with no limit on its connections (tests open hundreds of sessions)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.fixture
async def world(pg_dsn: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Two merchants: ``merchant`` with ``members``, ``other_merchant`` with ``foreign``."""
    from tests.live_support import make_world

    marker = request.node.get_closest_marker("world")
    members = 3 if marker is None else int(marker.kwargs.get("members", 3))
    return await make_world(pg_dsn, members=members)


@pytest.fixture
async def rn(pg_dsn: str, redis_prefix: str) -> AsyncIterator[RunningNode]:
    """One gateway node in this process, on this run's database and key space."""
    from tests.support import running_node, settings_for

    async with running_node(settings_for(pg_dsn, REDIS_URL, "ly"), redis_prefix) as node:
        yield node


@pytest.fixture
async def merchant(pg_dsn: str) -> str:
    """A merchant of its own, with a programme of defaults."""
    from tests.loyalty_support import new_merchant

    return await new_merchant(pg_dsn)


@pytest.fixture
async def clients(http: aiohttp.ClientSession, rn: RunningNode) -> AsyncIterator[Clients]:
    """POS and app sessions on ``rn``, closed at the end."""
    from tests.loyalty_support import Clients

    c = Clients(http, rn.url)
    yield c
    await c.close()
