"""Purchase aggregates: per member and day, what it bought (spend, units, visits) in total, by
channel, category, brand and SKU, kept incrementally in the transaction of each sale's and
return's ledger operation (``PURCHASE_DAYS``, an attachment). Owns the table
member_purchase_days. ``Aggregates`` is what ``Sales`` and ``Returns`` are given to attach
their rows (``gateway.purchases.GoodsFacts``); segments and the cashier view read
``features`` and ``summary``. This is its public face."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.aggregates.facts import (
    BRAND,
    CATEGORY,
    CHANNEL,
    PURCHASE_DAYS,
    SKU,
    TOTAL,
    DayRows,
    SkuCatalogue,
    day_rows,
)
from gateway.aggregates.reads import (
    Bought,
    Feature,
    Measure,
    Summary,
    day_date,
    day_of,
    features,
    quintiles,
    summary,
)
from gateway.aggregates.rows import AggregateRows
from gateway.purchases import Goods

#: The row kinds this package writes in the ledger's transactions (the node passes them to
#: its ledger).
ATTACHMENTS = (PURCHASE_DAYS,)


class Aggregates:
    """The writer ``Sales`` and ``Returns`` attach rows with, and the reads."""

    def __init__(self, pool: asyncpg.Pool[Any], catalogue: SkuCatalogue | None = None) -> None:
        self._pool = pool
        self._catalogue = catalogue

    def attach(self, merchant: str, goods: Goods) -> DayRows | None:
        return day_rows(merchant, goods, self._catalogue)

    async def summary(self, merchant: str, member: str, top: int = 10) -> Summary:
        return await summary(self._pool, merchant, member, top)


__all__ = [
    "ATTACHMENTS",
    "BRAND",
    "CATEGORY",
    "CHANNEL",
    "PURCHASE_DAYS",
    "SKU",
    "TOTAL",
    "AggregateRows",
    "Aggregates",
    "Bought",
    "DayRows",
    "Feature",
    "Measure",
    "SkuCatalogue",
    "Summary",
    "day_date",
    "day_of",
    "day_rows",
    "features",
    "quintiles",
    "summary",
]
