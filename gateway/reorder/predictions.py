"""The predictions kept (tables reorder_predictions, reorder_population, reorder_events) and
the worker that keeps them: on every node, every few seconds, it claims the members whose
purchases changed (rows the sales trigger queued, 0121_reorder.sql), recomputes their
predictions from their whole history off the sale path, and hourly the products' population
figures (then the predictions that lean on them).

Several nodes at once: a claimed event is locked (SKIP LOCKED: another node takes the next
ones) and deleted in the transaction that writes its member's predictions, so a node that
stops mid-way leaves the event for the next. Two events of one member claimed by two nodes
are computed one after the other (a transaction-scoped advisory lock per member), the later
from the later history."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.catalogue import replenishable_cycles
from gateway.purchases import bought
from gateway.reorder.predict import (
    MIN_BUYERS,
    MIN_OWN_INTERVALS,
    POPULATION_PERCENTILE,
    Population,
    Prediction,
    predict,
)
from gateway.reorder.schedule import ENDED_BY_PURCHASE, OVERTAKEN
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms

#: Members' events claimed per transaction.
BATCH = 500
#: Seconds between recomputations of the population figures on a node.
POPULATION_SECONDS = 3600.0
#: The advisory lock class of a member's recomputation (the migration's number).
_LOCK_CLASS = 0x0121

_CLAIM = """
DELETE FROM reorder_events WHERE id IN (
    SELECT id FROM reorder_events ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING merchant_id, member_id
"""

# Locks in one order on every node (the keys sorted), so two claims cannot deadlock.
_LOCK = """
SELECT pg_advisory_xact_lock($1, k) FROM (
    SELECT DISTINCT hashtext(m || '/' || mb) AS k
      FROM unnest($2::text[], $3::text[]) AS x(m, mb) ORDER BY 1) s
"""

_UPSERT = """
INSERT INTO reorder_predictions AS p (merchant_id, member_id, sku, last_purchase_at, units,
                                      purchases, intervals, per_unit_days, cycle_days,
                                      predicted_at, method)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::int[],
                         $7::int[], $8::float8[], $9::int[], $10::timestamptz[], $11::text[])
ON CONFLICT (merchant_id, member_id, sku) DO UPDATE
   SET last_purchase_at = EXCLUDED.last_purchase_at, units = EXCLUDED.units,
       purchases = EXCLUDED.purchases, intervals = EXCLUDED.intervals,
       per_unit_days = EXCLUDED.per_unit_days, cycle_days = EXCLUDED.cycle_days,
       predicted_at = EXCLUDED.predicted_at, method = EXCLUDED.method, updated_at = now()
"""

# The predictions of the members recomputed that are no longer theirs (a product no longer
# replenishable, sales moved to another member by a merge).
_DROP = """
DELETE FROM reorder_predictions p
 WHERE p.merchant_id = $1 AND p.member_id = ANY($2::text[])
   AND (p.member_id, p.sku) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))
"""

_POPULATION = f"""
INSERT INTO reorder_population AS x (merchant_id, sku, buyers, per_unit_days, computed_at)
SELECT merchant_id, sku, count(*),
       percentile_cont({POPULATION_PERCENTILE}) WITHIN GROUP (ORDER BY per_unit_days), now()
  FROM reorder_predictions
 WHERE per_unit_days IS NOT NULL AND ($1::text IS NULL OR merchant_id = $1)
 GROUP BY merchant_id, sku
ON CONFLICT (merchant_id, sku) DO UPDATE
   SET buyers = EXCLUDED.buyers, per_unit_days = EXCLUDED.per_unit_days, computed_at = now()
"""

# The predictions without enough gaps of their own, against the new figures: the same rule as
# ``predict`` (tests/reorder compare both).
_REPREDICT = """
UPDATE reorder_predictions p SET method = n.method, predicted_at = n.at, updated_at = now()
  FROM (SELECT q.merchant_id, q.member_id, q.sku, c.method,
               date_trunc('second', q.last_purchase_at
                   + make_interval(secs => 86400 * q.units * c.days)) AS at
          FROM reorder_predictions q
          LEFT JOIN reorder_population x USING (merchant_id, sku)
          CROSS JOIN LATERAL (SELECT
              CASE WHEN x.buyers >= $2 THEN 'population' ELSE 'catalogue' END AS method,
              CASE WHEN x.buyers >= $2 THEN x.per_unit_days ELSE q.cycle_days END AS days) c
         WHERE q.intervals < $3 AND ($1::text IS NULL OR q.merchant_id = $1)) n
 WHERE p.merchant_id = n.merchant_id AND p.member_id = n.member_id AND p.sku = n.sku
   AND (p.method, p.predicted_at) IS DISTINCT FROM (n.method, n.at)
"""


@dataclass(frozen=True, slots=True)
class PredictionPass:
    """What one pass did: members recomputed, predictions written, population figures
    recomputed (products) and predictions moved by them."""

    members: int = 0
    predictions: int = 0
    products: int = 0
    repredicted: int = 0


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _recompute(conn: Any, merchant: str, members: list[str], min_buyers: int) -> int:
    lines = await bought(conn, merchant, members)
    cycles = await replenishable_cycles(conn, merchant, {b.sku for b in lines})
    pops = {
        r["sku"]: Population(r["buyers"], r["per_unit_days"])
        for r in await conn.fetch(
            """SELECT sku, buyers, per_unit_days FROM reorder_population
                WHERE merchant_id = $1 AND sku = ANY($2::text[])""",
            merchant,
            list(cycles),
        )
    }
    history: dict[tuple[str, str], list[tuple[datetime, int]]] = defaultdict(list)
    for b in lines:
        if b.sku in cycles:
            history[(b.member, b.sku)].append((b.at, b.qty))
    keys = sorted(history)
    made = [predict(s, history[(m, s)], cycles[s], pops.get(s), min_buyers) for m, s in keys]
    await conn.execute(_DROP, merchant, members, [m for m, _ in keys], [s for _, s in keys])
    if made:
        await conn.execute(
            _UPSERT,
            merchant,
            [m for m, _ in keys],
            [p.sku for p in made],
            [p.last_purchase_at for p in made],
            [p.units for p in made],
            [p.purchases for p in made],
            [p.intervals for p in made],
            [p.per_unit_days for p in made],
            [p.cycle_days for p in made],
            [p.predicted_at for p in made],
            [p.method for p in made],
        )
    # a reminder of an earlier cycle is overtaken by the purchase (any channel): it ends, and
    # its messages not sent yet are not sent
    ended = [r["id"] for r in await conn.fetch(ENDED_BY_PURCHASE, merchant, members)]
    await conn.execute(OVERTAKEN, ended)
    return len(made)


class Predictor:
    """The predictions' worker on one node (``ReorderJob`` runs it, or a test)."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        min_buyers: int = MIN_BUYERS,
        population_seconds: float = POPULATION_SECONDS,
    ) -> None:
        self._pool = pool
        self._min_buyers = min_buyers
        self._population_seconds = population_seconds
        self._population_at = time.monotonic()

    async def drain_once(self, batch: int = BATCH) -> tuple[int, int]:
        """Claim up to ``batch`` queued events and recompute their members: (events claimed,
        predictions written)."""
        with translate_errors("reorder predictions"):
            async with self._pool.acquire() as conn, conn.transaction():
                claimed = await conn.fetch(_CLAIM, batch)
                if not claimed:
                    return 0, 0
                by_merchant: dict[str, set[str]] = defaultdict(set)
                for r in claimed:
                    by_merchant[r["merchant_id"]].add(r["member_id"])
                pairs = sorted((m, mb) for m, mbs in by_merchant.items() for mb in mbs)
                await conn.execute(
                    _LOCK, _LOCK_CLASS, [m for m, _ in pairs], [mb for _, mb in pairs]
                )
                written = 0
                for merchant in sorted(by_merchant):
                    members = sorted(by_merchant[merchant])
                    written += await _recompute(conn, merchant, members, self._min_buyers)
        return len(claimed), written

    async def refresh_population(self, merchant: str | None = None) -> tuple[int, int]:
        """Recompute the products' population figures (of ``merchant``'s, or all), then the
        predictions that lean on them: (products, predictions moved)."""
        with translate_errors("reorder population"):
            async with self._pool.acquire() as conn, conn.transaction():
                products = _count(await conn.execute(_POPULATION, merchant))
                moved = _count(
                    await conn.execute(_REPREDICT, merchant, self._min_buyers, MIN_OWN_INTERVALS)
                )
        self._population_at = time.monotonic()
        return products, moved

    async def run(self) -> PredictionPass:
        """Everything queued now, then the population figures if they are due."""
        members = written = 0
        while True:
            n, w = await self.drain_once()
            members, written = members + n, written + w
            if n < BATCH:
                break
        products = moved = 0
        if time.monotonic() - self._population_at >= self._population_seconds:
            products, moved = await self.refresh_population()
        return PredictionPass(members, written, products, moved)

    async def of_member(self, merchant: str, member: str) -> list[Prediction]:
        with translate_errors("reorder predictions read"):
            rows = await self._pool.fetch(
                """SELECT sku, last_purchase_at, units, purchases, intervals, per_unit_days,
                          cycle_days, predicted_at, method
                     FROM reorder_predictions WHERE merchant_id = $1 AND member_id = $2
                    ORDER BY sku""",
                merchant,
                member,
            )
        return [Prediction(**dict(r)) for r in rows]


class PredictionRows:
    """A member's predictions, reminders and messages, as a merge, an erasure and an export
    treat them (``gateway.members.MemberRows``)."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def move(self, conn: Any, merchant: str, source: str, survivor: str) -> dict[str, int]:
        """The duplicate's predictions go: the merge re-points its sales, which queues both
        members, and the survivor's are recomputed from all of them. Nothing is moved, so the
        merge reports nothing of them."""
        await conn.execute(
            "DELETE FROM reorder_predictions WHERE merchant_id = $1 AND member_id = $2",
            merchant,
            source,
        )
        return {}

    async def scrub(self, conn: Any, members: list[str]) -> None:
        """A prediction holds no personal data; a message's address and contents are blanked
        (what was sent when stays, for the report), and the reminders still to come end."""
        await conn.execute(
            """UPDATE reorder_messages SET to_address = '', subject = '', body_text = '',
                      body_html = NULL
                WHERE member_id = ANY($1::text[])""",
            members,
        )
        await conn.execute(
            "UPDATE reorder_clicks SET user_agent = '' WHERE member_id = ANY($1::text[])",
            members,
        )
        await conn.execute(
            """UPDATE reorder_reminders SET state = CASE WHEN step = 0 THEN 'cancelled'
                                                        ELSE 'done' END,
                      next_at = NULL, ended_at = now()
                WHERE member_id = ANY($1::text[]) AND state = 'scheduled'""",
            members,
        )

    async def export(self, merchant: str, member: str) -> dict[str, Any]:
        with translate_errors("export"):
            rows = await self._pool.fetch(
                """SELECT sku, last_purchase_at, units, predicted_at, method
                     FROM reorder_predictions WHERE merchant_id = $1 AND member_id = $2
                    ORDER BY sku""",
                merchant,
                member,
            )
        return {
            "reorder_predictions": [
                {
                    "sku": r["sku"],
                    "last_purchase": epoch_ms(r["last_purchase_at"]),
                    "units": r["units"],
                    "predicted": epoch_ms(r["predicted_at"]),
                    "method": r["method"],
                }
                for r in rows
            ]
        }


__all__ = ["BATCH", "PredictionPass", "PredictionRows", "Predictor"]
