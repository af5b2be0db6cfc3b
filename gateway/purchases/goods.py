"""What a sale sold or a return took back, as the purchase aggregates read it (``Goods``), and
the seam they plug into (``GoodsFacts``): the node passes ``Sales`` and ``Returns`` the
aggregates' writer, whose rows then ride on the same ledger operation as the sale's history.
This package neither knows nor spells the aggregates' tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from gateway.ledger import Attached
from gateway.store.db import translate_errors
from protocol.loyalty import PurchaseLine

_lines_decoder = msgspec.json.Decoder(list[PurchaseLine])
_counts_decoder = msgspec.json.Decoder(dict[str, int])


@dataclass(frozen=True, slots=True)
class GoodsLine:
    sku: str
    category: str | None
    brand: str | None
    #: signed: a return's are negative
    units: int
    #: price x units, signed
    value: int


@dataclass(frozen=True, slots=True)
class Goods:
    """A sale's goods (``visit`` 1, ``day`` None: the day its batch commits) or what a return
    takes back (negative units and values, ``visit`` 0, on the ``day`` of the sale it
    returns: days since 1970-01-01, UTC). ``total`` is what was paid (or refunded)."""

    channel: str
    total: int
    visit: int
    lines: tuple[GoodsLine, ...]
    day: int | None = None


class GoodsFacts(Protocol):
    """The purchase aggregates' writer (``gateway.aggregates.Aggregates``)."""

    def attach(self, merchant: str, goods: Goods) -> Attached | None:
        """The rows to write with the operation that sells or returns ``goods`` (None:
        none)."""
        ...


def sold(channel: str, total: int, lines: list[PurchaseLine]) -> Goods:
    return Goods(
        channel=channel,
        total=total,
        visit=1,
        lines=tuple(
            GoodsLine(ln.sku, ln.category, ln.brand, ln.qty, ln.qty * ln.price) for ln in lines
        ),
    )


_RETURNED = """
SELECT r.lines AS returned, r.value, s.lines, s.channel,
       floor(extract(epoch FROM s.created_at) / 86400)::int AS day
  FROM sale_returns r JOIN sales s ON s.merchant_id = r.merchant_id AND s.op_id = r.sale_op
 WHERE r.merchant_id = $1 AND r.op_id = $2
"""


async def returned(conn: Any, merchant: str, op: str) -> Goods | None:
    """What the return ``op`` (planned: its row is written) takes back: the value it returns
    from the sale's total, and of each SKU returned its units at the sale's price (a return by
    amount takes back value only)."""
    with translate_errors("return read"):
        r = await conn.fetchrow(_RETURNED, merchant, op)
    if r is None:
        return None
    counts = _counts_decoder.decode(r["returned"])
    lines = []
    for ln in _lines_decoder.decode(r["lines"]):
        n = min(ln.qty, counts.get(ln.sku, 0))
        if n:
            counts[ln.sku] -= n
            lines.append(GoodsLine(ln.sku, ln.category, ln.brand, -n, -n * ln.price))
    return Goods(channel=r["channel"], total=-r["value"], visit=0, lines=tuple(lines), day=r["day"])


__all__ = ["Goods", "GoodsFacts", "GoodsLine", "returned", "sold"]
