"""The catalogue's products (table catalogue_products): one, a page, removing one, and what
the sale path asks: the category and brand of the SKUs of a sale's lines."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.store.db import translate_errors


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    category: str | None
    brand: str | None
    price: int
    replenishable: bool
    cycle_days: int | None
    active: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LineFacts:
    """What the catalogue says of a sale line's SKU."""

    category: str | None
    brand: str | None


_COLUMNS = "sku, name, category, brand, price, replenishable, cycle_days, active, updated_at"


def _product(r: Any) -> Product:
    return Product(
        sku=r["sku"],
        name=r["name"],
        category=r["category"],
        brand=r["brand"],
        price=r["price"],
        replenishable=r["replenishable"],
        cycle_days=r["cycle_days"],
        active=r["active"],
        updated_at=r["updated_at"],
    )


async def get_product(pool: asyncpg.Pool[Any], merchant: str, sku: str) -> Product | None:
    with translate_errors("catalogue read"):
        r = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM catalogue_products WHERE merchant_id = $1 AND sku = $2",
            merchant,
            sku,
        )
    return None if r is None else _product(r)


async def page_products(
    pool: asyncpg.Pool[Any],
    merchant: str,
    after: str | None,
    limit: int,
    category: str | None = None,
) -> tuple[list[Product], str | None]:
    """Products in SKU order after ``after`` (keyset), of ``category`` if given; and the
    cursor of the next page (None on the last)."""
    with translate_errors("catalogue read"):
        rows = await pool.fetch(
            f"""SELECT {_COLUMNS} FROM catalogue_products
                 WHERE merchant_id = $1 AND ($2::text IS NULL OR sku > $2)
                   AND ($3::text IS NULL OR category = $3)
                 ORDER BY sku LIMIT $4""",
            merchant,
            after,
            category,
            limit + 1,
        )
    products = [_product(r) for r in rows[:limit]]
    return products, (products[-1].sku if len(rows) > limit else None)


async def delete_product(pool: asyncpg.Pool[Any], merchant: str, sku: str) -> bool:
    with translate_errors("catalogue write"):
        n = await pool.fetchval(
            "DELETE FROM catalogue_products WHERE merchant_id = $1 AND sku = $2 RETURNING 1",
            merchant,
            sku,
        )
    return bool(n)


async def line_facts(
    pool: asyncpg.Pool[Any], merchant: str, skus: Collection[str]
) -> dict[str, LineFacts]:
    """The category and brand of those of ``skus`` in the catalogue (one primary-key
    lookup)."""
    with translate_errors("catalogue read"):
        rows = await pool.fetch(
            """SELECT sku, category, brand FROM catalogue_products
                WHERE merchant_id = $1 AND sku = ANY($2::text[])""",
            merchant,
            list(skus),
        )
    return {r["sku"]: LineFacts(r["category"], r["brand"]) for r in rows}


async def replenishable_cycles(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any], merchant: str, skus: Collection[str]
) -> dict[str, int]:
    """The usage cycle (days) of those of ``skus`` that are active replenishable products."""
    with translate_errors("catalogue read"):
        rows = await conn.fetch(
            """SELECT sku, cycle_days FROM catalogue_products
                WHERE merchant_id = $1 AND sku = ANY($2::text[]) AND replenishable AND active""",
            merchant,
            list(skus),
        )
    return {r["sku"]: r["cycle_days"] for r in rows}


__all__ = [
    "LineFacts",
    "Product",
    "delete_product",
    "get_product",
    "line_facts",
    "page_products",
    "replenishable_cycles",
]
