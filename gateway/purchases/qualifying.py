"""Qualifying points, the measure tiers are earned by: the points of a member's sales in a
window, less what the counted returns of those same sales clawed back. A sale that left the
window takes its returns with it (they are not subtracted twice)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from gateway.purchases.returned import COUNTED, settle
from gateway.store.db import translate_errors


def _expr(member: str, since: str, until: str | None = None) -> str:
    upto = "" if until is None else f" AND s.created_at <= {until}"
    returned = "" if until is None else f" AND r.created_at <= {until}"
    return f"""(COALESCE((SELECT sum(s.points) FROM sales s
                         WHERE s.member_id = {member} AND s.created_at > {since}{upto}), 0)
             - COALESCE((SELECT sum(r.clawback) FROM sale_returns r
                          JOIN sales s ON s.merchant_id = r.merchant_id AND s.op_id = r.sale_op
                         WHERE r.member_id = {member} AND s.created_at > {since}{upto}{returned}
                           AND {COUNTED}), 0))"""


#: The member's pending returns, settled before they are counted (``returned.settle``).
_PENDING = """(SELECT array_agg(r.merchant_id || '/' || r.op_id) FROM sale_returns r
                WHERE r.member_id = $1 AND r.state = 'pending')"""


async def qualifying_points(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any], member: str, since: datetime
) -> int:
    """Points earned by sales since ``since``, less what returns of those sales clawed back."""
    sql = f"SELECT {_expr('$1', '$2')} AS q, {_PENDING} AS pending"
    with translate_errors("qualifying points"):
        row = await conn.fetchrow(sql, member, since)
        assert row is not None
        if row["pending"]:  # rare: a return in flight, or one its node left pending
            merchant = row["pending"][0].split("/", 1)[0]
            ops = [key.split("/", 1)[1] for key in row["pending"]]
            if await settle(conn, merchant, ops):
                row = await conn.fetchrow(sql, member, since)
                assert row is not None
    return max(0, int(row["q"]))


async def qualifying_by_member(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any],
    merchant: str,
    at: datetime | None,
    window_days: int,
) -> dict[str, int]:
    """Every member's qualifying points over the ``window_days`` up to ``at`` (never later
    than the database's clock, which stamps the sales: an instant ahead of it, a node's clock
    skew, would drop tiers early). Members without sales are left out."""
    with translate_errors("tier evaluation"):
        pending = await conn.fetch(
            "SELECT op_id FROM sale_returns WHERE merchant_id = $1 AND state = 'pending'",
            merchant,
        )
        await settle(conn, merchant, [r["op_id"] for r in pending])
        rows = await conn.fetch(
            f"""WITH t AS (SELECT LEAST(COALESCE($2::timestamptz, now()), now()) AS at),
                     m AS (SELECT DISTINCT member_id AS id FROM sales WHERE merchant_id = $1)
                SELECT m.id, {_expr("m.id", "t.at - make_interval(days => $3)", "t.at")} AS q
                  FROM t, m""",
            merchant,
            at,
            window_days,
        )
    return {r["id"]: max(0, int(r["q"])) for r in rows}
