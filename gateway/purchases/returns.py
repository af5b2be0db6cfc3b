"""Returns: what a return of a sale (whole, by line or by amount) takes back and gives back.

A return is recorded in ``sale_returns`` under the sale's row lock (so concurrent returns of
one sale never return more than was bought), then posted to the ledger as one ``return`` entry:
``restored - clawback``, with ``clamp`` (the clawback is capped at what is available; the rest
is reported as ``uncollected`` and owed: the ledger takes it from the next points that become
available).

The ledger records each return's state on its row in the same transaction as its entry
(``RETURN_STATE``: applied, or refused). A return row counts (against what is left of the sale,
and in tier points) unless the ledger refused it: while its ledger operation is pending, or
applied. One the ledger refused without recording it (``member_merged``) is deleted by the
caller, and an id the ledger holds for another operation is refused before any row is written.

A redemption (the commit that paid part of a sale with points) is restored through the returns
of one sale only, and all of them together restore at most what it spent: its operation is
locked while a return is planned, so two returns citing it are planned one after the other.

The proportional rules are in docs/loyalty.md.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import asyncpg
import msgspec

from gateway.errors import Refused
from gateway.ledger import (
    AttachmentKind,
    Earn,
    Ledger,
    Origin,
    member_balance,
    merged_refusal,
    recorded,
    refuse,
)
from gateway.members import resolve
from gateway.purchases.goods import GoodsFacts, returned
from gateway.purchases.returned import counted
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.loyalty import PointsItem, PurchaseLine, Return, ReturnReceipt
from protocol.messages import HoldState, Outcome, PointsLine, SaleReceipt

_lines_decoder = msgspec.json.Decoder(list[PurchaseLine])
_weights_decoder = msgspec.json.Decoder(list[str])
_counts_decoder = msgspec.json.Decoder(dict[str, int])

#: The state of a return's row, set by the ledger in its operation's transaction.
#: Found by key (``= ANY``), each row's state looked up among the batch's few (a join on the
#: rows compared every row with every row: see the ledger's ``queries.WRITE_BATCH``); a row
#: of another merchant that only shares an op id with one of them is left alone.
RETURN_STATE = AttachmentKind(
    "returns",
    """UPDATE sale_returns r
   SET state = (SELECT x.state FROM json_to_recordset({rows}::json) AS x(m text, o text, state text)
                 WHERE x.m = r.merchant_id AND x.o = r.op_id LIMIT 1)
 WHERE r.op_id = ANY(ARRAY(SELECT x.o FROM json_to_recordset({rows}::json) AS x(o text)))
   AND r.merchant_id = ANY(ARRAY(SELECT x.m FROM json_to_recordset({rows}::json) AS x(m text)))
   AND (SELECT count(*) FROM json_to_recordset({rows}::json) AS x(m text, o text)
         WHERE x.m = r.merchant_id AND x.o = r.op_id) > 0
RETURNING 1""",
)


class ReturnRow:
    """Marks the return's row applied or refused with the outcome the ledger records."""

    __slots__ = ()

    @property
    def kind(self) -> AttachmentKind:
        return RETURN_STATE

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        return {
            "m": op.origin.merchant,
            "o": op.op,
            "state": "applied" if outcome.ok else "refused",
        }


_RETURN_ROW = ReturnRow()


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
    return named == owner or await resolve(conn, named) == owner


class _Refusal(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def _refused(outcome: Outcome) -> Refused:
    err = outcome.error
    assert err is not None
    return Refused(err.message, ErrorCode(err.code))


class Returns:
    def __init__(
        self, pool: asyncpg.Pool[Any], ledger: Ledger, facts: GoodsFacts | None = None
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._facts = facts

    async def _attached(self, merchant: str, op: str) -> tuple[Any, ...]:
        """The return's state, and what it takes back of the member's aggregates (read from
        its row, so a retry of a return planned before builds the same rows)."""
        if self._facts is None:
            return (_RETURN_ROW,)
        goods = await returned(self._pool, merchant, op)
        extra = None if goods is None else self._facts.attach(merchant, goods)
        return (_RETURN_ROW,) if extra is None else (_RETURN_ROW, extra)

    async def return_sale(self, origin: Origin, frame: Return) -> ReturnReceipt:
        plan = await self.plan(origin.merchant, frame)
        if isinstance(plan, Outcome):
            raise _refused(plan)
        net = plan.restored - plan.clawback
        # A failure here (``unavailable``, ``timeout``) leaves the return's row under this op:
        # the client retries the same op, which finds it. Deleting it here could delete the row
        # of a return that an earlier attempt of the same op did apply.
        attached = () if plan.recorded else await self._attached(origin.merchant, frame.op)
        outcome = plan.recorded or await self._ledger.execute(
            Earn(
                op=frame.op,
                member=plan.member,
                points=net,
                origin=origin,
                kind="return",
                contra="issuance",
                clamp=True,
                owe=True,
                breakdown=(
                    PointsLine(rule="return", points=-plan.clawback),
                    PointsLine(rule="refund", points=plan.restored),
                ),
                detail=plan.fingerprint,
                attached=attached,
            )
        )
        if not outcome.ok:
            await self.forget(origin.merchant, frame.op, plan.fingerprint)
            raise _refused(outcome)
        receipt = outcome.data
        assert isinstance(receipt, SaleReceipt)
        return _receipt(frame.op, frame.sale, plan.clawback, plan.restored, receipt)

    async def receipt(self, merchant: str, op: str, posted: SaleReceipt) -> ReturnReceipt | None:
        """The reply a return got, rebuilt from what the ledger recorded (``posted``) and the
        return's row: what ``outcome`` answers for a return. None if no return has that op."""
        with translate_errors("return read"):
            row = await self._pool.fetchrow(
                """SELECT sale_op, clawback, restored FROM sale_returns
                    WHERE merchant_id = $1 AND op_id = $2""",
                merchant,
                op,
            )
        if row is None:
            return None
        return _receipt(op, row["sale_op"], row["clawback"], row["restored"], posted)

    async def plan(self, merchant: str, frame: Return) -> PlannedReturn | Outcome:
        """Record the return (or find it, for a retry) and say what it moves."""
        fp = return_fingerprint(frame)
        try:
            with translate_errors("return"):
                async with self._pool.acquire() as conn, conn.transaction():
                    return await _plan(conn, merchant, frame, fp)
        except _Refusal as r:
            return r.outcome

    async def forget(self, merchant: str, op: str, fp: bytes) -> None:
        """Delete the row of a return the ledger refused: it moved no points, so it must not
        count against the sale (a refusal the ledger did not record, such as ``member_merged``,
        would otherwise look pending forever). A retry with the same id plans it afresh."""
        with translate_errors("return"):
            await self._pool.execute(
                """DELETE FROM sale_returns
                    WHERE merchant_id = $1 AND op_id = $2 AND fingerprint = $3
                      AND state <> 'applied'""",
                merchant,
                op,
                fp,
            )


def _receipt(
    op: str, sale: str, clawback: int, restored: int, posted: SaleReceipt
) -> ReturnReceipt:
    return ReturnReceipt(
        op=op,
        sale=sale,
        member=posted.member,
        clawback=clawback,
        restored=restored,
        applied=posted.points,
        uncollected=posted.points - (restored - clawback),
        breakdown=[PointsItem(rule=b.rule, points=b.points) for b in posted.breakdown],
        balance=member_balance(posted.balance),
    )


async def _plan(conn: Any, merchant: str, frame: Return, fp: bytes) -> PlannedReturn:
    def fail(code: ErrorCode, message: str = "") -> _Refusal:
        return _Refusal(refuse(frame.op, code, message))

    retried = await _retried(conn, merchant, frame, fp, fail)
    if retried is not None:
        return retried
    sale = await conn.fetchrow(
        """SELECT member_id, total, points, lines, line_points FROM sales
            WHERE merchant_id = $1 AND op_id = $2
              FOR UPDATE""",
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

    prior = await counted(
        conn,
        merchant,
        await conn.fetch(
            """SELECT op_id, state, lines, value, clawback FROM sale_returns r
                WHERE r.merchant_id = $1 AND r.sale_op = $2 AND r.state <> 'refused'""",
            merchant,
            frame.sale,
        ),
    )
    share = _share(frame, sale, prior, fail)
    points: int = sale["points"]
    total: int = sale["total"]
    clawed = sum(p["clawback"] for p in prior)
    if share.completes:
        clawback = points - clawed
    elif share.of_points is not None:
        clawback = min(points - clawed, math.floor(points * share.of_points))
    else:
        clawback = min(points - clawed, points * share.value // total) if total else 0
    restored = 0
    if frame.redemption is not None:
        restored = await _restored(conn, merchant, frame, share, fail)

    await conn.execute(
        """INSERT INTO sale_returns (merchant_id, op_id, sale_op, member_id, lines, value,
                                     clawback, restored, redemption, fingerprint)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)""",
        merchant,
        frame.op,
        frame.sale,
        frame.member,
        msgspec.json.encode(share.counts).decode(),
        share.value,
        clawback,
        restored,
        frame.redemption,
        fp,
    )
    return PlannedReturn(frame.member, frame.sale, clawback, restored, fp)


async def _retried(
    conn: Any, merchant: str, frame: Return, fp: bytes, fail: Any
) -> PlannedReturn | None:
    """A retry of a return already planned (found by its op, whichever of a merged pair it
    names), refused if it changed; None for a new return, refused if another command took
    its op id."""
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
    held = await recorded(conn, merchant, frame.op)
    if held is not None and held.kind != "return":
        # Another command took the op id. Refused before a row is written, so that no row of
        # a return that can never apply is left to count should this node stop right here.
        raise fail(ErrorCode.IDEMPOTENCY_CONFLICT)
    if mine is None:
        return None
    replay = held.outcome if held is not None else None
    if replay is not None and not replay.ok:
        raise _Refusal(replay)
    return PlannedReturn(
        mine["member_id"], frame.sale, mine["clawback"], mine["restored"], fp, replay
    )


@dataclass(frozen=True, slots=True)
class _Share:
    """What part of a sale a return takes."""

    #: SKU -> quantity returned (empty for a return by amount)
    counts: dict[str, int]
    #: the cash value returned, in minor units
    value: int
    #: whether it returns everything left of the sale
    completes: bool
    #: the returned lines' share of what the sale earned (None: share by value)
    of_points: Fraction | None
    #: the returned value's share of the sale, exact (what restores spent points: they paid
    #: for value); only a return that does not complete the sale uses it
    of_value: Fraction


def _share(frame: Return, sale: Any, prior: list[Any], fail: Any) -> _Share:
    total: int = sale["total"]
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
        earned = sum(sold_points.values(), Fraction(0))
        of_points = None
        if earned > 0:  # the returned lines' share of what the sale earned, not of its value
            of_points = (
                sum((sold_points[s] * q / sold_qty[s] for s, q in want.items()), Fraction(0))
                / earned
            )
        return _Share(dict(want), value, completes, of_points, share)
    if frame.amount is not None:
        if frame.amount > left_value or frame.amount == 0:
            raise fail(ErrorCode.RETURN_EXCEEDS_SALE, f"{left_value} left of the sale")
        value = frame.amount
        # total >= left_value >= amount > 0
        return _Share({}, value, value == left_value, None, Fraction(value, total))
    # the whole remainder
    counts = {s: q - done_qty[s] for s, q in sold_qty.items() if q > done_qty[s]}
    if left_value <= 0 and not counts:
        raise fail(ErrorCode.RETURN_EXCEEDS_SALE, "nothing of the sale is left to return")
    return _Share(counts, left_value, True, None, Fraction(1))


async def _restored(conn: Any, merchant: str, frame: Return, share: _Share, fail: Any) -> int:
    """The points of the cited redemption this return gives back."""
    assert frame.redemption is not None
    found = await recorded(conn, merchant, frame.redemption, lock=True)
    data = found.outcome.data if found is not None and found.applied("commit") else None
    # a redemption made by a duplicate since merged into this member counts too
    if not isinstance(data, HoldState) or not await _same_member(conn, data.member, frame.member):
        raise fail(ErrorCode.OPERATION_NOT_FOUND, "no committed redemption with that op")
    cited = await counted(
        conn,
        merchant,
        await conn.fetch(
            """SELECT op_id, state, sale_op, restored FROM sale_returns r
                WHERE r.merchant_id = $1 AND r.redemption = $2 AND r.state <> 'refused'""",
            merchant,
            frame.redemption,
        ),
    )
    for c in cited:
        if c["sale_op"] != frame.sale:
            raise fail(
                ErrorCode.REDEMPTION_OF_ANOTHER_SALE,
                f"its points are restored through returns of sale {c['sale_op']}",
            )
    spent: int = data.committed
    given: int = sum(c["restored"] for c in cited)
    if share.completes:
        restored = spent - given
    else:
        # Not through the floored ``value`` over ``total``: a sale paid entirely with points
        # (total 0) restored nothing, and one of total 1 restored nothing of half its lines.
        restored = min(spent - given, math.floor(spent * share.of_value))
    return max(restored, 0)
