"""Helpers of the loyalty and admin API tests: admin requests, a merchant of one's own, POS
and app sessions on a running node, and the frames they exchange (the fixtures that use them,
``rn``, ``merchant`` and ``clients``, are in tests/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import asyncpg

from gateway.programme import create_merchant
from protocol.messages import Error, Result, Welcome
from tests.conftest import unique
from tests.support import WsClient, app_token, pos_token

ADMIN = {"Authorization": "Bearer dev-admin-token"}


async def admin(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    """One admin API request with the operator's token: its status and JSON body (or None)."""
    async with http.request(method, url, headers=ADMIN, **kw) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def new_merchant(pg_dsn: str) -> str:
    """A merchant of its own, with a programme of defaults."""
    m = unique("mer")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await create_merchant(conn, m)
        await conn.execute("INSERT INTO programmes (merchant_id, region) VALUES ($1, 'US')", m)
    finally:
        await conn.close()
    return m


class Clients:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.opened: list[WsClient] = []

    async def pos(
        self, merchant: str, store: str = "s1", terminal: str = "t1", channel: str = "pos"
    ) -> WsClient:
        from gateway import auth
        from tests.support import SECRET

        c = await WsClient.connect(self.http, self.url)
        token = (
            pos_token(merchant, store, terminal)
            if channel == "pos"
            else auth.mint_pos(SECRET, merchant, store, terminal, channel=channel)
        )
        w = await c.hello(token)
        assert isinstance(w, Welcome), w
        self.opened.append(c)
        return c

    async def app(self, merchant: str, member: str) -> WsClient:
        c = await WsClient.connect(self.http, self.url)
        w = await c.hello(app_token(merchant, member))
        assert isinstance(w, Welcome), w
        self.opened.append(c)
        return c

    async def close(self) -> None:
        for c in self.opened:
            await c.close()


async def ok(client: WsClient, frame: dict[str, Any]) -> Any:
    reply = await client.request(frame)
    assert isinstance(reply, Result), (frame, reply)
    return reply.data


async def err(client: WsClient, frame: dict[str, Any]) -> Error:
    reply = await client.request(frame)
    assert isinstance(reply, Error), (frame, reply)
    return reply


async def enrol(client: WsClient, **ids: Any) -> Any:
    return await ok(client, {"type": "enrol", **ids})


def phone() -> str:
    """A fresh valid US number (555-01xx are fictional; use random exchange digits)."""
    import random

    exchange = f"{random.randint(2, 8)}{random.randint(2, 9)}{random.randint(0, 9)}"
    return f"+1 415 {exchange} {random.randint(1000, 9999)}"


async def fetch(pg_dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query, on a connection of its own."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def setup_db(pg_dsn: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def add_reward(
    pg_dsn: str, merchant: str, reward: str, cost: int, value: int, name: str = ""
) -> None:
    """An ``amount_off`` reward of ``value`` minor units for ``cost`` points."""
    await setup_db(
        pg_dsn,
        """INSERT INTO rewards (merchant_id, id, name, cost, kind, value)
           VALUES ($1, $2, $3, $4, 'amount_off', $5)""",
        merchant,
        reward,
        name,
        cost,
        value,
    )


async def member_with_points(till: WsClient, total: int) -> str:
    """Enrol a fresh member and post one sale of ``total`` cents (base rate 1 per unit)."""
    m = (await enrol(till, phone=phone())).member
    if total:
        await ok(till, {"type": "sale", "op": f"seed-{m}", "member": m, "total": total})
    return str(m)


async def next_push(client: WsClient, kind: type, timeout: float = 5.0) -> Any:
    import asyncio

    while True:
        frame = await asyncio.wait_for(client.pushes.get(), timeout)
        if isinstance(frame, kind):
            return frame
