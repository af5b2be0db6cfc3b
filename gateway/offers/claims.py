"""Which offers a member may use now, and a sale's use of the offers its cashier presents.

Exactly once, limits under concurrency: the ledger writes a batch as one statement, and an
attachment there cannot refuse its operation (a failing statement would fail the whole
batch, other members' sales with it). So a sale's offers are decided BEFORE it is submitted:
``claim`` reserves one use of each presented offer in a transaction of its own that locks
the offers' rows (in id order: two claims never deadlock), checks the window, the channel, the
targeting and both limits under that lock, and inserts the use keyed by (merchant, offer, the
sale's op id). Two registers racing for the last use are serialised by the row lock: the
second sees it gone and is refused. A retried sale (same op) finds its own use and takes no
other. The sale's ledger operation then stamps the use ``applied_at`` in its own transaction
(``OFFER_USE``); a sale the ledger refuses gives back the uses its claim newly reserved (never
one a first attempt of the same op made). A node that dies between the claim and the ledger
leaves a reserved use without a sale: the sale's retry (same op) takes it up; if none ever
comes it stays counted (the merchant loses a use, the member is never paid twice)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.ledger import AttachmentKind, Earn
from gateway.offers.model import COLUMNS, Offer, offer
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.messages import Outcome, PointsLine, SaleLine

#: A sale's use of an offer, stamped applied in the sale's ledger transaction.
OFFER_USE = AttachmentKind(
    "offer_uses",
    """UPDATE offer_uses u SET applied_at = {at}
  FROM json_to_recordset({rows}::json) AS s(m text, o text, f text)
 WHERE u.merchant_id = s.m AND u.op_id = s.o AND u.offer_id = s.f
RETURNING 1""",
)

ELIGIBLE = f"""
SELECT {COLUMNS} FROM offers o
 WHERE o.merchant_id = $1 AND o.active AND o.starts_at <= $4 AND $4 < o.ends_at
   AND ($3::text IS NULL OR $3 = ANY (o.channels))
   AND (o.segments && $5::text[]
        OR EXISTS (SELECT 1 FROM offer_members om
                    WHERE om.merchant_id = $1 AND om.offer_id = o.id AND om.member_id = $2))
   AND (o.total_limit IS NULL OR o.used < o.total_limit)
   AND (o.per_member_limit IS NULL
        OR (SELECT count(*) FROM offer_uses u
             WHERE u.merchant_id = $1 AND u.offer_id = o.id AND u.member_id = $2)
           < o.per_member_limit)
 ORDER BY o.id"""


async def eligible(
    conn: Any,
    merchant: str,
    member: str,
    channel: str | None,
    segments: Sequence[str],
    at: datetime | None = None,
) -> list[Offer]:
    """The offers ``member`` may use now on ``channel`` (None: on any)."""
    with translate_errors("offers read"):
        rows = await conn.fetch(
            ELIGIBLE, merchant, member, channel, at or datetime.now(UTC), list(segments)
        )
    return [offer(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Use:
    """One offer's use by a sale (rides on the sale's earn)."""

    offer: str

    @property
    def kind(self) -> AttachmentKind:
        return OFFER_USE

    def row(self, op: Earn, outcome: Outcome) -> Mapping[str, Any] | None:
        if not outcome.ok:
            return None
        return {"m": op.origin.merchant, "o": op.op, "f": self.offer}


def points_of(o: Offer, lines: Sequence[SaleLine], base: int) -> int:
    """What ``o`` adds to a sale; refused when the sale does not qualify."""
    if o.kind == "bonus_sku" and not any(ln.sku == o.sku for ln in lines):
        raise Refused(f"offer {o.id!r}: the sale has no {o.sku!r}", ErrorCode.OFFER_NOT_ELIGIBLE)
    if o.kind == "bonus_category" and not any(ln.category == o.category for ln in lines):
        raise Refused(
            f"offer {o.id!r}: the sale has nothing in {o.category!r}",
            ErrorCode.OFFER_NOT_ELIGIBLE,
        )
    if o.kind == "multiplier":
        assert o.multiplier is not None
        num, den = (Decimal(base) * (o.multiplier - 1)).as_integer_ratio()
        return num // den
    assert o.points is not None
    return o.points


@dataclass(frozen=True, slots=True)
class Claim:
    """A sale's presented offers as it applies them: breakdown lines, the rows that ride on
    its earn, and the uses this claim newly reserved (given back if the sale is refused)."""

    lines: tuple[PointsLine, ...]
    attached: tuple[Use, ...]
    new: tuple[str, ...]


async def claim(
    pool: asyncpg.Pool[Any],
    merchant: str,
    member: str,
    op: str,
    channel: str,
    segments: Sequence[str],
    offers: Sequence[str],
    lines: Sequence[SaleLine],
    base: int,
    at: datetime | None = None,
) -> Claim:
    """Reserve one use of each of ``offers`` for the sale ``op`` (see the module doc); a
    refusal (offer_not_eligible) reserves nothing."""
    at = at or datetime.now(UTC)
    wanted = sorted(set(offers))
    out: list[PointsLine] = []
    new: list[str] = []
    member_segments = set(segments)
    with translate_errors("offer claim"):
        async with pool.acquire() as conn, conn.transaction():
            for oid in wanted:
                r = await conn.fetchrow(
                    f"""SELECT {COLUMNS} FROM offers WHERE merchant_id = $1 AND id = $2
                        FOR UPDATE""",
                    merchant,
                    oid,
                )
                if r is None:
                    raise Refused(f"no offer {oid!r}", ErrorCode.OFFER_NOT_ELIGIBLE)
                o = offer(r)
                mine = await conn.fetchrow(
                    """SELECT member_id, points FROM offer_uses
                        WHERE merchant_id = $1 AND offer_id = $2 AND op_id = $3""",
                    merchant,
                    oid,
                    op,
                )
                if mine is not None:  # this sale's retry: its own use, nothing more
                    pts = mine["points"]
                else:
                    await _check(conn, o, member, channel, member_segments, at)
                    pts = points_of(o, lines, base)
                    await conn.execute(
                        """INSERT INTO offer_uses
                               (merchant_id, offer_id, op_id, member_id, points, reserved_at)
                           VALUES ($1, $2, $3, $4, $5, $6)""",
                        merchant,
                        oid,
                        op,
                        member,
                        pts,
                        at,
                    )
                    await conn.execute(
                        "UPDATE offers SET used = used + 1 WHERE merchant_id = $1 AND id = $2",
                        merchant,
                        oid,
                    )
                    new.append(oid)
                out.append(
                    PointsLine(
                        rule=f"offer:{oid}",
                        points=pts,
                        sku=o.sku if o.kind == "bonus_sku" else None,
                    )
                )
    return Claim(tuple(out), tuple(Use(oid) for oid in wanted), tuple(new))


async def _check(
    conn: Any, o: Offer, member: str, channel: str, segments: set[str], at: datetime
) -> None:
    def no(why: str) -> Refused:
        return Refused(f"offer {o.id!r}: {why}", ErrorCode.OFFER_NOT_ELIGIBLE)

    if not o.live(at):
        raise no("not live (withdrawn, or outside its window)")
    if channel not in o.channels:
        raise no(f"not offered {channel}")
    if not segments & set(o.segments):
        listed = await conn.fetchval(
            """SELECT 1 FROM offer_members
                WHERE merchant_id = $1 AND offer_id = $2 AND member_id = $3""",
            o.merchant,
            o.id,
            member,
        )
        if not listed:
            raise no("not offered to this member")
    if o.total_limit is not None and o.used >= o.total_limit:
        raise no("no uses left")
    if o.per_member_limit is not None:
        n = await conn.fetchval(
            """SELECT count(*) FROM offer_uses
                WHERE merchant_id = $1 AND offer_id = $2 AND member_id = $3""",
            o.merchant,
            o.id,
            member,
        )
        if n >= o.per_member_limit:
            raise no("the member has used it up")


async def release(pool: asyncpg.Pool[Any], merchant: str, op: str, offers: Sequence[str]) -> None:
    """Give back the uses ``op`` reserved of ``offers`` and that no sale applied."""
    if not offers:
        return
    with translate_errors("offer release"):
        async with pool.acquire() as conn, conn.transaction():
            gone = await conn.fetch(
                """DELETE FROM offer_uses
                    WHERE merchant_id = $1 AND op_id = $2 AND offer_id = ANY($3::text[])
                      AND applied_at IS NULL
                RETURNING offer_id""",
                merchant,
                op,
                sorted(offers),
            )
            if gone:
                await conn.execute(
                    """UPDATE offers SET used = used - 1
                        WHERE merchant_id = $1 AND id = ANY($2::text[])""",
                    merchant,
                    sorted(r[0] for r in gone),
                )
