"""Fixtures for ledger tests: a running Ledger engine over the run's database, publishing to
the run's Redis key space, and a fresh merchant with members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.fanout import Publisher
from gateway.ledger import Ledger, Origin
from gateway.members import create_members
from gateway.programme import create_merchant
from gateway.settings import LedgerSettings
from gateway.store.keys import Keys
from tests.conftest import REDIS_URL, unique


@dataclass
class LedgerWorld:
    ledger: Ledger
    db: asyncpg.Connection
    redis: aioredis.Redis
    keys: Keys
    merchant: str
    members: list[str]
    origin: Origin


@pytest.fixture
async def ledger_world(pg_dsn: str, redis_prefix: str) -> AsyncIterator[LedgerWorld]:
    db = await asyncpg.connect(pg_dsn)
    redis = aioredis.Redis.from_url(REDIS_URL)
    keys = Keys(redis_prefix)
    merchant = unique("mer")
    members = [unique("mem") for _ in range(4)]
    await create_merchant(db, merchant)
    await create_members(db, merchant, members)
    ledger = Ledger(pg_dsn, LedgerSettings(lanes=2), Publisher(redis, keys))
    await ledger.start()
    yield LedgerWorld(
        ledger, db, redis, keys, merchant, members, Origin(merchant, "pos", "s1", "t1")
    )
    await ledger.close()
    await redis.aclose()
    await db.close()


async def check_invariants(db: asyncpg.Connection, members: list[str]) -> None:
    """Every account equals the sum of its entries; version = number of entries; versions are
    1..n without holes; available and held are never negative; held = sum of active holds."""
    rows = await db.fetch(
        """SELECT a.member_id, a.posted, a.held, a.version,
                  coalesce(sum(e.posted_delta), 0) AS sp, coalesce(sum(e.held_delta), 0) AS sh,
                  count(e.seq) AS n, coalesce(max(e.version), 0) AS maxv,
                  (SELECT coalesce(sum(h.amount), 0) FROM holds h
                    WHERE h.member_id = a.member_id AND h.status = 'active') AS active_held
             FROM accounts a LEFT JOIN ledger_entries e ON e.member_id = a.member_id
            WHERE a.member_id = ANY($1::text[])
            GROUP BY a.member_id""",
        members,
    )
    assert len(rows) == len(members)
    for r in rows:
        assert r["posted"] == r["sp"], dict(r)
        assert r["held"] == r["sh"], dict(r)
        assert r["version"] == r["n"] == r["maxv"], dict(r)
        assert r["held"] >= 0 and r["posted"] - r["held"] >= 0, dict(r)
        assert r["held"] == r["active_held"], dict(r)
