"""The aggregates' rows of a sale or a return (``PURCHASE_DAYS``), written in the transaction
of its ledger operation: the ledger writes an attachment's rows for an operation it applies
now, never for a replay of one applied before, nor for a refusal, so a retried sale never
counts twice and a refused return takes nothing back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.ledger import AttachmentKind, Earn
from gateway.purchases import Goods
from protocol.messages import Outcome

#: Day rows, added to (``units``, ``spend``, ``visits`` of each dimension). The rows of one
#: batch are summed by key first: one statement may not update a row twice.
PURCHASE_DAYS = AttachmentKind(
    "purchase_days",
    """INSERT INTO member_purchase_days AS d
           (member_id, dim, key, day, merchant_id, units, spend, visits)
SELECT x.mb, e ->> 0, e ->> 1,
       COALESCE(x.d, floor(extract(epoch FROM {at}) / 86400)::int), x.m,
       sum((e ->> 2)::int8), sum((e ->> 3)::int8), sum((e ->> 4)::int)
  FROM json_to_recordset({rows}::json) AS x(m text, mb text, d int, f json),
       json_array_elements(x.f) AS e
 GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (member_id, dim, key, day) DO UPDATE
   SET units = d.units + EXCLUDED.units, spend = d.spend + EXCLUDED.spend,
       visits = d.visits + EXCLUDED.visits
RETURNING 1""",
)

#: The dimensions: a day's totals, by channel, by category, by brand, by SKU.
TOTAL, CHANNEL, CATEGORY, BRAND, SKU = "t", "h", "c", "b", "s"


class SkuCatalogue(Protocol):
    """Where the category and brand of a SKU come from when the merchant keeps a catalogue
    (the seam for ``gateway.catalogue``, being built): None, or a missing part, keeps what the
    sale line said."""

    def classify(self, merchant: str, sku: str) -> tuple[str | None, str | None] | None: ...


@dataclass(frozen=True, slots=True)
class DayRows:
    """One operation's day rows: [dim, key, units, spend, visits] each."""

    day: int | None
    rows: tuple[tuple[str, str, int, int, int], ...]

    @property
    def kind(self) -> AttachmentKind:
        return PURCHASE_DAYS

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        return {"m": op.origin.merchant, "mb": op.member, "d": self.day, "f": self.rows}


def day_rows(merchant: str, goods: Goods, catalogue: SkuCatalogue | None = None) -> DayRows | None:
    """The rows ``goods`` adds (or, for a return, takes back)."""
    sums: dict[tuple[str, str], list[int]] = {}

    def add(dim: str, key: str, units: int, spend: int, visits: int) -> None:
        acc = sums.setdefault((dim, key), [0, 0, 0])
        acc[0] += units
        acc[1] += spend
        acc[2] += visits

    units = sum(ln.units for ln in goods.lines)
    add(TOTAL, "", units, goods.total, goods.visit)
    add(CHANNEL, goods.channel or "pos", units, goods.total, goods.visit)
    for ln in goods.lines:
        category, brand = ln.category, ln.brand
        if catalogue is not None:
            found = catalogue.classify(merchant, ln.sku)
            if found is not None:
                category = found[0] or category
                brand = found[1] or brand
        # a key bought on several lines of one sale counts one visit
        seen = (SKU, ln.sku) not in sums
        add(SKU, ln.sku, ln.units, ln.value, goods.visit if seen else 0)
        if category:
            seen = (CATEGORY, category) not in sums
            add(CATEGORY, category, ln.units, ln.value, goods.visit if seen else 0)
        if brand:
            seen = (BRAND, brand) not in sums
            add(BRAND, brand, ln.units, ln.value, goods.visit if seen else 0)
    if goods.visit == 0 and goods.total == 0 and not goods.lines:
        return None
    return DayRows(goods.day, tuple((d, k, a[0], a[1], a[2]) for (d, k), a in sums.items()))
