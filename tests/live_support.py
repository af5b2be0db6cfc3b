"""Helpers shared by the live-session tests (fan-out, presence, limits, drain, multi-node)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg

from gateway.members import create_members
from gateway.programme import create_merchant
from protocol.messages import BalanceChanged, Welcome
from tests.conftest import TIME_FACTOR, unique
from tests.support import WsClient, app_token, pos_token


async def make_world(pg_dsn: str, members: int = 3) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        m1, m2 = unique("mer"), unique("mer")
        ids = [unique("mem") for _ in range(members)]
        foreign = unique("mem")
        await create_merchant(conn, m1)
        await create_merchant(conn, m2)
        await create_members(conn, m1, ids)
        await create_members(conn, m2, [foreign])
    finally:
        await conn.close()
    return {"merchant": m1, "other_merchant": m2, "members": ids, "foreign": foreign}


async def pos(
    http: aiohttp.ClientSession, url: str, merchant: str, terminal: str = "t1"
) -> WsClient:
    c = await WsClient.connect(http, url)
    w = await c.hello(pos_token(merchant, "s1", terminal))
    assert isinstance(w, Welcome), w
    return c


async def app(http: aiohttp.ClientSession, url: str, merchant: str, member: str) -> WsClient:
    c = await WsClient.connect(http, url)
    w = await c.hello(app_token(merchant, member))
    assert isinstance(w, Welcome), w
    return c


async def sale(till: WsClient, member: str, total: int = 1_000) -> Any:
    return await till.request(
        {"type": "sale", "op": unique("op"), "member": member, "total": total}
    )


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout * TIME_FACTOR
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def next_of(c: WsClient, kind: type, timeout: float = 5.0) -> Any:
    """The next push of type ``kind`` (others are skipped)."""
    while True:
        frame = await asyncio.wait_for(c.pushes.get(), timeout * TIME_FACTOR)
        if isinstance(frame, kind):
            return frame


async def changes_until(c: WsClient, version: int, timeout: float = 10.0) -> list[BalanceChanged]:
    """Collect balance_changed pushes until ``version`` is reached."""
    got: list[BalanceChanged] = []
    while not got or got[-1].version < version:
        got.append(await next_of(c, BalanceChanged, timeout))
    return got
