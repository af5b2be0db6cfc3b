"""Several gateway processes, hundreds of concurrent POS sessions hammering a few members,
with duplicate sends of the same operation through different nodes at the same time.
Afterwards: no balance negative, every account equals the sum of its entries, and every
acknowledged operation is present exactly once with the outcome its POS saw."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import asyncpg
import pytest

from gateway.members import create_members
from gateway.programme import create_merchant
from protocol.messages import Result
from tests.conftest import REDIS_URL, unique
from tests.ledger.conftest import check_invariants
from tests.ledger.pos_driver import Till, check_acknowledged, flow, new_op
from tests.support import NodeProcess

pytestmark = pytest.mark.slow

NODES = 3
TILLS = 150
FLOWS_PER_TILL = 3


async def test_hundreds_of_sessions_on_three_nodes(pg_dsn, redis_prefix):
    conn = await asyncpg.connect(pg_dsn)
    merchant, members = unique("mer"), [unique("mem") for _ in range(5)]
    await create_merchant(conn, merchant)
    await create_members(conn, merchant, members)
    nodes = [NodeProcess(pg_dsn, REDIS_URL, redis_prefix, f"c{i}") for i in range(NODES)]
    try:
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        urls = [n.url for n in nodes]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            tills = [Till(http, [urls[i % NODES]], merchant) for i in range(TILLS)]

            async def work(i: int, till: Till) -> None:
                rng = random.Random(i)
                for _ in range(FLOWS_PER_TILL):
                    await flow(till, rng.choice(members), rng)
                # the same reserve sent through two nodes at once: one outcome for both
                op = new_op("dup")
                frame = {
                    "type": "reserve",
                    "op": op,
                    "member": rng.choice(members),
                    "points": rng.randrange(1, 50),
                }
                other = Till(http, [urls[(i + 1) % NODES]], merchant)
                a, b = await asyncio.gather(till.call(frame), other.call(frame))
                assert type(a) is type(b)
                assert (a.data if isinstance(a, Result) else a.code) == (
                    b.data if isinstance(b, Result) else b.code
                ), (a, b)
                await other.close()

            await asyncio.gather(*(work(i, t) for i, t in enumerate(tills)))
            acked = {k: v for t in tills for k, v in t.acked.items()}
            assert len(acked) >= TILLS * FLOWS_PER_TILL * 2
            assert sum(isinstance(v, Result) for v in acked.values()) > len(acked) // 2
            await check_acknowledged(conn, merchant, acked)
            await check_invariants(conn, members)
            for t in tills:
                await t.close()
    finally:
        for n in nodes:
            n.terminate()
        for n in nodes:
            n.wait()
        await conn.close()
