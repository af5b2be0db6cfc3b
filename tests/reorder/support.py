"""Helpers of the reorder tests: replenishable products, sales with lines, and moving a
sale back in time (the history a prediction reads)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from tests.loyalty_support import ok, setup_db
from tests.support import WsClient


async def product(
    pg_dsn: str, merchant: str, sku: str, cycle_days: int | None = 30, price: int = 1000
) -> None:
    """A catalogue product: replenishable with ``cycle_days``, durable with None."""
    await setup_db(
        pg_dsn,
        """INSERT INTO catalogue_products (merchant_id, sku, name, price, replenishable,
                                           cycle_days)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        merchant,
        sku,
        f"Product {sku}",
        price,
        cycle_days is not None,
        cycle_days,
    )


async def buy(till: WsClient, pg_dsn: str, op: str, member: str, at: datetime, **skus: int) -> None:
    """A sale of ``qty`` of each SKU (``sku=qty``), through the till, dated ``at``."""
    lines = [{"sku": s.replace("_", "-"), "qty": q, "price": 1000} for s, q in skus.items()]
    total = sum(1000 * q for q in skus.values())
    await ok(till, {"type": "sale", "op": op, "member": member, "total": total, "lines": lines})
    await setup_db(pg_dsn, "UPDATE sales SET created_at = $2 WHERE op_id = $1", op, at)


async def fetch(pg_dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
