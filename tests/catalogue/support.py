"""Helpers of the catalogue tests: imports through the admin API, bodies of generated rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg

from tests.loyalty_support import ADMIN

JSONL = "application/x-ndjson"
CSV = "text/csv"


def base(url: str, merchant: str) -> str:
    return f"{url}/admin/v1/merchants/{merchant}/catalogue"


async def put_import(
    http: aiohttp.ClientSession,
    url: str,
    merchant: str,
    import_id: str,
    body: bytes | AsyncIterator[bytes],
    ctype: str = JSONL,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    h = {**(ADMIN if headers is None else headers), "Content-Type": ctype}
    async with http.put(f"{base(url, merchant)}/imports/{import_id}", data=body, headers=h) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.get(url, headers=ADMIN if headers is None else headers) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


def row(sku: str, **fields: Any) -> dict[str, Any]:
    return {"sku": sku, "name": f"Product {sku}", "price": 1000, **fields}


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def generated(n: int, prefix: str = "sku", price: int = 1000) -> bytes:
    return jsonl(
        *(row(f"{prefix}-{i:06d}", category=f"cat-{i % 7}", price=price) for i in range(n))
    )


async def products_of(pg_dsn: str, merchant: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT * FROM catalogue_products WHERE merchant_id = $1 ORDER BY sku", merchant
            )
        )
    finally:
        await conn.close()
