"""Sales and returns: the unified purchase history and the points they move.

A sale is recorded in ``sales`` keyed by its operation id *before* its ledger operation, with
the points computed then; a retry (same ``op``) reuses that row, so it posts exactly the same
points even if rules or the member's tier changed meanwhile, and the ledger applies the
operation once. The history shows a sale once its ledger operation committed.

A return is recorded in ``sale_returns`` under the sale's row lock (so concurrent returns of
one sale never return more than was bought), then posted to the ledger as one ``return`` entry:
``restored - clawback``, with ``clamp`` (the clawback is capped at what is available; the rest
is reported as ``uncollected`` and owed: the ledger takes it from the next points that become
available).

A return row counts (against what is left of the sale, and in tier points) while its ledger
operation is pending or applied as a return; one the ledger refused is deleted by the caller,
and one whose id the ledger holds for another operation never counts (``_COUNTS``).

A redemption (the commit that paid part of a sale with points) is restored through the returns
of one sale only, and all of them together restore at most what it spent: its operation row is
locked while a return is planned, so two returns citing it are planned one after the other.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

import asyncpg
import msgspec

from gateway.errors import Refused
from gateway.ledger.apply import epoch_ms, merged_refusal, refuse
from gateway.ledger.engine import decode_outcome
from gateway.loyalty import directory
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.loyalty import Purchase, PurchaseLine, Return
from protocol.messages import HoldState, Outcome, PointsLine

_lines_decoder = msgspec.json.Decoder(list[PurchaseLine])
_weights_decoder = msgspec.json.Decoder(list[str])
_breakdown_decoder = msgspec.json.Decoder(list[PointsLine])
_counts_decoder = msgspec.json.Decoder(dict[str, int])

# --------------------------------------------------------------------------- sales


@dataclass(frozen=True, slots=True)
class Recorded:
    member: str
    points: int
    breakdown: tuple[PointsLine, ...]
    fingerprint: bytes


_FIND_SALE = """
SELECT member_id, points, breakdown, fingerprint FROM sales WHERE merchant_id = $1 AND op_id = $2
"""


async def find_sale(pool: asyncpg.Pool[Any], merchant: str, op: str) -> Recorded | None:
    with translate_errors("sale read"):
        r = await pool.fetchrow(_FIND_SALE, merchant, op)
    if r is None:
        return None
    return Recorded(
        r["member_id"],
        r["points"],
        tuple(_breakdown_decoder.decode(r["breakdown"])),
        r["fingerprint"],
    )


_HISTORY = """
SELECT s.seq, s.op_id, s.total, s.points, s.lines, s.channel, s.store_id, s.created_at
  FROM sales s
  JOIN operations o ON o.merchant_id = s.merchant_id AND o.op_id = s.op_id
                   AND o.ok AND o.kind = 'earn'
 WHERE s.member_id = $1 AND s.merchant_id = $2 AND ($3::bigint IS NULL OR s.seq < $3)
 ORDER BY s.seq DESC
 LIMIT $4
"""

#: A return row counts unless the ledger holds its id for something other than an applied
#: return (a refusal, or another operation that used the id first).
_COUNTS = """NOT EXISTS (SELECT 1 FROM operations o
                    WHERE o.merchant_id = r.merchant_id AND o.op_id = r.op_id
                      AND NOT (o.ok AND o.kind = 'return'))"""

_RETURNS_OF = """
SELECT r.sale_op, r.lines, r.clawback
  FROM sale_returns r
  JOIN operations o ON o.merchant_id = r.merchant_id AND o.op_id = r.op_id
                   AND o.ok AND o.kind = 'return'
 WHERE r.merchant_id = $1 AND r.sale_op = ANY($2::text[])
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


# --------------------------------------------------------------------------- returns


@dataclass(frozen=True, slots=True)
class PlannedReturn:
    member: str
    """The member the ledger moves the points of: the sale's owner now (a survivor, if the
    member named was merged)."""
    sale: str
    clawback: int
    restored: int
    fingerprint: bytes
    recorded: Outcome | None = None
    """The ledger's outcome of this op, when an earlier attempt applied it: replayed."""


def return_fingerprint(frame: Return) -> bytes:
    """What a retry must repeat. Not the member: the sale names it, and a retry after a merge
    may name the duplicate or the survivor (``_plan`` checks it is one of those)."""
    lines = sorted((ln.sku, ln.qty) for ln in frame.lines)
    raw = msgspec.json.encode(("return", frame.sale, lines, frame.amount, frame.redemption))
    return hashlib.blake2b(raw, digest_size=16).digest()


async def _same_member(conn: Any, named: str, owner: str) -> bool:
    """Whether ``named`` is ``owner``, or was merged into it (through any chain of merges)."""
    return named == owner or await directory.resolve(conn, named) == owner


class _Refusal(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


async def plan_return(
    pool: asyncpg.Pool[Any], merchant: str, frame: Return
) -> PlannedReturn | Outcome:
    """Record the return (or find it, for a retry) and say what it moves. See the module doc
    and gateway/loyalty/README.md for the proportional rules."""
    fp = return_fingerprint(frame)
    try:
        with translate_errors("return"):
            async with pool.acquire() as conn, conn.transaction():
                return await _plan(conn, merchant, frame, fp)
    except _Refusal as r:
        return r.outcome


async def _plan(conn: Any, merchant: str, frame: Return, fp: bytes) -> PlannedReturn:
    def fail(code: ErrorCode, message: str = "") -> _Refusal:
        return _Refusal(refuse(frame.op, code, message))

    # A retry first: found by its op, whichever of a merged pair it names.
    mine = await conn.fetchrow(
        """SELECT member_id, fingerprint, clawback, restored FROM sale_returns
            WHERE merchant_id = $1 AND op_id = $2 FOR UPDATE""",
        merchant,
        frame.op,
    )
    if mine is not None:
        if mine["fingerprint"] != fp:
            raise fail(ErrorCode.IDEMPOTENCY_CONFLICT)
        if not await _same_member(conn, frame.member, mine["member_id"]):
            raise fail(ErrorCode.SALE_NOT_FOUND)
        held = await conn.fetchrow(
            "SELECT kind, result FROM operations WHERE merchant_id = $1 AND op_id = $2",
            merchant,
            frame.op,
        )
        if held is not None and held["kind"] != "return":
            raise fail(ErrorCode.IDEMPOTENCY_CONFLICT)  # another command took the op id
        recorded = decode_outcome(held["result"]) if held is not None else None
        if recorded is not None and not recorded.ok:
            raise _Refusal(recorded)
        return PlannedReturn(
            mine["member_id"], frame.sale, mine["clawback"], mine["restored"], fp, recorded
        )

    sale = await conn.fetchrow(
        """SELECT s.member_id, s.total, s.points, s.lines, s.line_points FROM sales s
             JOIN operations o ON o.merchant_id = s.merchant_id AND o.op_id = s.op_id
                              AND o.ok AND o.kind = 'earn'
            WHERE s.merchant_id = $1 AND s.op_id = $2
              FOR UPDATE OF s""",
        merchant,
        frame.sale,
    )
    if sale is None:
        raise fail(ErrorCode.SALE_NOT_FOUND)
    if sale["member_id"] != frame.member:
        owner = sale["member_id"]
        if await _same_member(conn, frame.member, owner):
            # The sale moved with a merge: the named member is the duplicate, refused as every
            # command naming it is (not recorded: the same op may name the survivor).
            raise _Refusal(merged_refusal(frame.op, frame.member, owner))
        raise fail(ErrorCode.SALE_NOT_FOUND)

    prior = await conn.fetch(
        "SELECT lines, value, clawback FROM sale_returns r"
        f" WHERE r.merchant_id = $1 AND r.sale_op = $2 AND {_COUNTS}",
        merchant,
        frame.sale,
    )
    total: int = sale["total"]
    points: int = sale["points"]
    sold_lines = _lines_decoder.decode(sale["lines"])
    sold_qty: Counter[str] = Counter()
    sold_value: Counter[str] = Counter()
    for ln in sold_lines:
        sold_qty[ln.sku] += ln.qty
        sold_value[ln.sku] += ln.qty * ln.price
    # What each SKU earned (NULL for sales recorded without it: shares by value then).
    sold_points: dict[str, Fraction] = {}
    if sale["line_points"] is not None:
        for ln, w in zip(sold_lines, _weights_decoder.decode(sale["line_points"]), strict=True):
            sold_points[ln.sku] = sold_points.get(ln.sku, Fraction(0)) + Fraction(w)
    whole = sum(sold_value.values())
    done_qty: Counter[str] = Counter()
    done_value = 0
    for p in prior:
        done_qty.update(_counts_decoder.decode(p["lines"]))
        done_value += p["value"]
    left_value = total - done_value

    counts: dict[str, int] = {}
    share_of_points: Fraction | None = None
    # The returned value's share of the sale, exact (what restores spent points: they paid for
    # value). Only a return that does not complete the sale uses it.
    share_of_value = Fraction(1)
    if frame.lines:
        if frame.amount is not None:
            raise fail(ErrorCode.INVALID_FIELD, "give lines or amount, not both")
        want: Counter[str] = Counter()
        for rl in frame.lines:
            want[rl.sku] += rl.qty
        for sku, qty in want.items():
            if qty > sold_qty[sku] - done_qty[sku]:
                raise fail(
                    ErrorCode.RETURN_EXCEEDS_SALE,
                    f"{sku}: returning {qty}, {sold_qty[sku] - done_qty[sku]} left of the sale",
                )
        counts = dict(want)
        completes = all(done_qty[s] + want[s] == q for s, q in sold_qty.items())
        # Exact: with 28-digit decimals, one line of three at 100 of 300 came to 99.99...
        if whole:
            returned = sum(
                (Fraction(sold_value[s] * q, sold_qty[s]) for s, q in want.items()), Fraction(0)
            )
            share = returned / whole
        else:  # every line priced 0: the total is split by quantity
            share = Fraction(sum(want.values()), sum(sold_qty.values()))
        value = left_value if completes else min(left_value, math.floor(share * total))
        share_of_value = share
        earned = sum(sold_points.values(), Fraction(0))
        if earned > 0:  # the returned lines' share of what the sale earned, not of its value
            share_of_points = (
                sum((sold_points[s] * q / sold_qty[s] for s, q in want.items()), Fraction(0))
                / earned
            )
    elif frame.amount is not None:
        if frame.amount > left_value or frame.amount == 0:
            raise fail(ErrorCode.RETURN_EXCEEDS_SALE, f"{left_value} left of the sale")
        value = frame.amount
        completes = value == left_value
        share_of_value = Fraction(value, total)  # total >= left_value >= amount > 0
    else:  # the whole remainder
        counts = {s: q - done_qty[s] for s, q in sold_qty.items() if q > done_qty[s]}
        value = left_value
        completes = True
    if value <= 0 and not counts:
        raise fail(ErrorCode.RETURN_EXCEEDS_SALE, "nothing of the sale is left to return")

    clawed = sum(p["clawback"] for p in prior)
    if completes:
        clawback = points - clawed
    elif share_of_points is not None:
        clawback = min(points - clawed, math.floor(points * share_of_points))
    else:
        clawback = min(points - clawed, points * value // total) if total else 0

    restored = 0
    if frame.redemption is not None:
        raw = await conn.fetchval(
            """SELECT result FROM operations
                WHERE merchant_id = $1 AND op_id = $2 AND kind = 'commit' AND ok
                  FOR UPDATE""",
            merchant,
            frame.redemption,
        )
        data = decode_outcome(raw).data if raw is not None else None
        # a redemption made by a duplicate since merged into this member counts too
        if not isinstance(data, HoldState) or not await _same_member(
            conn, data.member, frame.member
        ):
            raise fail(ErrorCode.OPERATION_NOT_FOUND, "no committed redemption with that op")
        cited = await conn.fetch(
            "SELECT sale_op, restored FROM sale_returns r"
            f" WHERE r.merchant_id = $1 AND r.redemption = $2 AND {_COUNTS}",
            merchant,
            frame.redemption,
        )
        for c in cited:
            if c["sale_op"] != frame.sale:
                raise fail(
                    ErrorCode.REDEMPTION_OF_ANOTHER_SALE,
                    f"its points are restored through returns of sale {c['sale_op']}",
                )
        spent = data.committed
        given = sum(c["restored"] for c in cited)
        if completes:
            restored = spent - given
        else:
            # Not through the floored ``value`` over ``total``: a sale paid entirely with points
            # (total 0) restored nothing, and one of total 1 restored nothing of half its lines.
            restored = min(spent - given, math.floor(spent * share_of_value))
        restored = max(restored, 0)

    await conn.execute(
        """INSERT INTO sale_returns (merchant_id, op_id, sale_op, member_id, lines, value,
                                     clawback, restored, redemption, fingerprint)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)""",
        merchant,
        frame.op,
        frame.sale,
        frame.member,
        msgspec.json.encode(counts).decode(),
        value,
        clawback,
        restored,
        frame.redemption,
        fp,
    )
    return PlannedReturn(frame.member, frame.sale, clawback, restored, fp)


async def forget_return(pool: asyncpg.Pool[Any], merchant: str, op: str, fp: bytes) -> None:
    """Delete the row of a return the ledger refused: it moved no points, so it must not count
    against the sale (a refusal the ledger did not record, such as ``member_merged``, would
    otherwise look pending forever). A retry with the same id plans it afresh."""
    with translate_errors("return"):
        await pool.execute(
            """DELETE FROM sale_returns r
                WHERE merchant_id = $1 AND op_id = $2 AND fingerprint = $3
                  AND NOT EXISTS (SELECT 1 FROM operations o
                                   WHERE o.merchant_id = $1 AND o.op_id = $2
                                     AND o.ok AND o.kind = 'return')""",
            merchant,
            op,
            fp,
        )


def qualifying_expr(member: str, since: str, until: str | None = None) -> str:
    """SQL for a member's qualifying points: the points of its sales made after ``since`` (and
    up to ``until``), less what the counted returns of those same sales clawed back. A sale
    that left the window takes its returns with it (they are not subtracted twice)."""
    upto = "" if until is None else f" AND s.created_at <= {until}"
    returned = "" if until is None else f" AND r.created_at <= {until}"
    return f"""(COALESCE((SELECT sum(s.points) FROM sales s
                          JOIN operations o ON o.merchant_id = s.merchant_id
                           AND o.op_id = s.op_id AND o.ok AND o.kind = 'earn'
                         WHERE s.member_id = {member} AND s.created_at > {since}{upto}), 0)
             - COALESCE((SELECT sum(r.clawback) FROM sale_returns r
                          JOIN sales s ON s.merchant_id = r.merchant_id AND s.op_id = r.sale_op
                         WHERE r.member_id = {member} AND s.created_at > {since}{upto}{returned}
                           AND {_COUNTS}), 0))"""


async def qualifying_points(
    conn: asyncpg.Pool[Any] | asyncpg.Connection[Any], member: str, since: datetime
) -> int:
    """Points earned by sales since ``since``, less what returns of those sales clawed back."""
    with translate_errors("qualifying points"):
        value = await conn.fetchval(f"SELECT {qualifying_expr('$1', '$2')}", member, since)
    return max(0, int(value))


def not_found(what: str) -> Refused:
    return Refused(f"no such {what}", ErrorCode.SALE_NOT_FOUND)
