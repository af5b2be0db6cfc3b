"""A POS that behaves as the protocol asks: it makes each operation id once, retries with the
same id on retryable errors, timeouts and lost connections (reconnecting to any node), and
records what was acknowledged."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import aiohttp
import asyncpg

from protocol.messages import Error, Result, Welcome
from tests.support import WsClient, pos_token

_n = itertools.count()


class Till:
    def __init__(self, http: aiohttp.ClientSession, urls: list[str], merchant: str) -> None:
        self.http = http
        self.urls = urls
        self.merchant = merchant
        self.client: WsClient | None = None
        self.acked: dict[str, Any] = {}  # op id -> final reply (Result or non-retryable Error)
        self.reconnects = 0
        self.retries = 0  # retryable errors, timeouts and lost connections seen
        self._url = random.randrange(len(urls))

    async def _connect(self) -> WsClient:
        while True:
            url = self.urls[self._url % len(self.urls)]
            self._url += 1
            try:
                c = await WsClient.connect(self.http, url)
                w = await c.hello(pos_token(self.merchant), versions=[1])
                if isinstance(w, Welcome):
                    return c
                await c.close()
            except (aiohttp.ClientError, OSError, ConnectionError, TimeoutError):
                pass
            self.reconnects += 1
            await asyncio.sleep(0.05)

    async def call(self, frame: dict[str, Any], give_up: float = 60.0) -> Any:
        """Send until a final answer; the op id in ``frame`` is reused on every retry."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up
        while loop.time() < deadline:
            if self.client is None or self.client.close_code is not None or self.client.ws.closed:
                self.client = await self._connect()
            try:
                reply = await self.client.request(dict(frame), timeout=3.0)
            except (ConnectionError, TimeoutError, aiohttp.ClientError, RuntimeError):
                self.retries += 1
                if self.client is not None:
                    await self.client.close()
                self.client = None
                continue
            if isinstance(reply, Error) and reply.retryable:
                self.retries += 1
                await asyncio.sleep(0.05)
                continue
            assert isinstance(reply, Result | Error)
            if "op" in frame:
                self.acked[frame["op"]] = reply
            return reply
        raise TimeoutError(f"no final answer for {frame}")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def new_op(prefix: str = "op") -> str:
    return f"{prefix}-{next(_n)}-{random.randrange(1 << 30):x}"


async def flow(till: Till, member: str, rng: random.Random) -> None:
    """One checkout: earn from a sale, then reserve and commit (or release) some points."""
    await till.call(
        {"type": "sale", "op": new_op("sale"), "member": member, "total": rng.randrange(100, 5000)}
    )
    hold = new_op("hold")
    r = await till.call(
        {"type": "reserve", "op": hold, "member": member, "points": rng.randrange(1, 30)}
    )
    if isinstance(r, Result):
        if rng.random() < 0.7:
            await till.call(
                {
                    "type": "commit",
                    "op": new_op("commit"),
                    "member": member,
                    "hold": hold,
                    "points": max(1, r.data.points - rng.randrange(3)),
                }
            )
        else:
            await till.call(
                {"type": "release", "op": new_op("rel"), "member": member, "hold": hold}
            )


async def check_acknowledged(db: asyncpg.Connection, merchant: str, acked: dict[str, Any]) -> None:
    """Every acknowledged operation is recorded exactly once with the outcome the POS saw,
    and changed the ledger exactly once (or not at all, if it was refused)."""
    rows = await db.fetch(
        """SELECT o.op_id, o.ok,
                  (SELECT count(*) FROM ledger_entries e
                    WHERE e.merchant_id = o.merchant_id AND e.op_id = o.op_id
                      AND e.kind <> 'expire') AS n
             FROM operations o WHERE o.merchant_id = $1 AND o.op_id = ANY($2::text[])""",
        merchant,
        list(acked),
    )
    found = {r["op_id"]: r for r in rows}
    assert set(found) == set(acked), set(acked) - set(found)
    for op, reply in acked.items():
        r = found[op]
        assert r["ok"] == isinstance(reply, Result), (op, reply)
        if isinstance(reply, Result):
            points = getattr(reply.data, "points", 1)
            assert r["n"] == (1 if points else 0), (op, dict(r))
        else:
            assert r["n"] == 0, (op, dict(r))
