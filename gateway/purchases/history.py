"""The unified purchase history: every channel's sales, newest first, with what returns took
back of each line."""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg
import msgspec

from gateway.purchases.returned import settle
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.loyalty import Purchase, PurchaseLine

_lines_decoder = msgspec.json.Decoder(list[PurchaseLine])
_counts_decoder = msgspec.json.Decoder(dict[str, int])

# A sale's row is written with its applied earn, in the ledger's transaction (``sales.py``):
# every row is a sale that earned.
_HISTORY = """
SELECT s.seq, s.op_id, s.total, s.points, s.lines, s.channel, s.store_id, s.created_at
  FROM sales s
 WHERE s.member_id = $1 AND s.merchant_id = $2 AND ($3::bigint IS NULL OR s.seq < $3)
 ORDER BY s.seq DESC
 LIMIT $4
"""

_RETURNS_OF = """
SELECT r.op_id, r.state, r.sale_op, r.lines, r.clawback
  FROM sale_returns r
 WHERE r.merchant_id = $1 AND r.sale_op = ANY($2::text[]) AND r.state <> 'refused'
"""


async def history(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any],
    merchant: str,
    member: str,
    before: int | None,
    limit: int,
) -> tuple[list[Purchase], str | None]:
    """Newest first; keyset pagination on the sale sequence (stable under concurrent sales)."""
    with translate_errors("history read"):
        rows = await conn.fetch(_HISTORY, member, merchant, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        rets = await conn.fetch(_RETURNS_OF, merchant, [r["op_id"] for r in rows])
    # The history shows the returns the ledger applied (not those still in flight).
    states = await settle(conn, merchant, [r["op_id"] for r in rets if r["state"] == "pending"])
    rets = [r for r in rets if states.get(r["op_id"], r["state"]) == "applied"]
    returned: dict[str, Counter[str]] = {}
    clawed: Counter[str] = Counter()
    for r in rets:
        returned.setdefault(r["sale_op"], Counter()).update(_counts_decoder.decode(r["lines"]))
        clawed[r["sale_op"]] += r["clawback"]
    out = []
    for r in rows:
        left = Counter(returned.get(r["op_id"], Counter()))
        lines = []
        for ln in _lines_decoder.decode(r["lines"]):
            n = min(ln.qty, left[ln.sku])
            left[ln.sku] -= n
            lines.append(msgspec.structs.replace(ln, returned=n) if n else ln)
        out.append(
            Purchase(
                op=r["op_id"],
                at=epoch_ms(r["created_at"]),
                channel=r["channel"],
                store=r["store_id"],
                total=r["total"],
                points=r["points"],
                returned_points=clawed[r["op_id"]],
                lines=lines,
            )
        )
    return out, (str(rows[-1]["seq"]) if more and rows else None)
