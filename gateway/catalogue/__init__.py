"""The product catalogue per merchant: SKU, name, category, brand, price, whether it is
replenished and its usage cycle; loaded by bulk imports (JSON lines or CSV, one transaction
each, progress readable on every node) and read by the sale path (the category of a line
that names none). Owns the tables catalogue_products and catalogue_imports. This is its
public face."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Any

import asyncpg

from gateway.catalogue.imports import (
    BATCH_ROWS,
    BODY_IDLE_SECONDS,
    IMPORTS_PER_NODE,
    MAX_IMPORT_BYTES,
    REJECTIONS_KEPT,
    ImportReport,
    Imports,
    State,
)
from gateway.catalogue.products import (
    LineFacts,
    Product,
    delete_product,
    get_product,
    line_facts,
    page_products,
    replenishable_cycles,
)
from gateway.catalogue.rows import (
    FIELDS,
    MAX_CYCLE_DAYS,
    MAX_ROW_BYTES,
    BodyError,
    BodyRefused,
    Format,
    ProductRow,
    Reason,
    Rejection,
)


class Catalogue:
    """A node's catalogue service: imports, reads, and the sale path's lookup."""

    def __init__(self, pool: asyncpg.Pool[Any], dsn: str, max_bytes: int = MAX_IMPORT_BYTES):
        self._pool = pool
        self.imports = Imports(pool, dsn, max_bytes)

    @property
    def max_bytes(self) -> int:
        return self.imports.max_bytes

    async def run_import(
        self, merchant: str, import_id: str, fmt: Format, chunks: AsyncIterator[bytes]
    ) -> ImportReport:
        return await self.imports.run(merchant, import_id, fmt, chunks)

    async def import_report(self, merchant: str, import_id: str) -> ImportReport | None:
        return await self.imports.report(merchant, import_id)

    async def product(self, merchant: str, sku: str) -> Product | None:
        return await get_product(self._pool, merchant, sku)

    async def products(
        self, merchant: str, after: str | None, limit: int, category: str | None = None
    ) -> tuple[list[Product], str | None]:
        return await page_products(self._pool, merchant, after, limit, category)

    async def delete(self, merchant: str, sku: str) -> bool:
        return await delete_product(self._pool, merchant, sku)

    async def facts(self, merchant: str, skus: Collection[str]) -> dict[str, LineFacts]:
        """The category and brand of those of ``skus`` in the merchant's catalogue."""
        return await line_facts(self._pool, merchant, skus)


__all__ = [
    "BATCH_ROWS",
    "BODY_IDLE_SECONDS",
    "FIELDS",
    "IMPORTS_PER_NODE",
    "MAX_CYCLE_DAYS",
    "MAX_IMPORT_BYTES",
    "MAX_ROW_BYTES",
    "REJECTIONS_KEPT",
    "BodyError",
    "BodyRefused",
    "Catalogue",
    "Format",
    "ImportReport",
    "Imports",
    "LineFacts",
    "Product",
    "ProductRow",
    "Reason",
    "Rejection",
    "State",
    "replenishable_cycles",
]
