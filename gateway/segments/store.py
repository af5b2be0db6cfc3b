"""The segments' tables: definitions (segments), membership (segment_members) and the RFM
quintile boundaries of the last full pass (segment_rfm)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.segments.conditions import Condition, Cuts, encode, parse
from gateway.store.db import translate_errors


@dataclass(frozen=True, slots=True)
class Segment:
    merchant: str
    id: str
    name: str
    condition: Condition
    created_at: datetime
    updated_at: datetime
    computed_at: datetime | None


_COLUMNS = "merchant_id, id, name, condition, created_at, updated_at, computed_at"


def _segment(r: Any) -> Segment:
    return Segment(
        merchant=r["merchant_id"],
        id=r["id"],
        name=r["name"],
        condition=parse(r["condition"].encode()),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        computed_at=r["computed_at"],
    )


async def definitions(conn: Any, merchant: str) -> list[Segment]:
    with translate_errors("segments read"):
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM segments WHERE merchant_id = $1 ORDER BY id", merchant
        )
    return [_segment(r) for r in rows]


async def merchants(conn: Any) -> list[str]:
    return [r[0] for r in await conn.fetch("SELECT DISTINCT merchant_id FROM segments ORDER BY 1")]


async def version(conn: Any, merchant: str) -> tuple[Any, ...]:
    """What changes whenever the merchant's definitions or RFM boundaries do."""
    r = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM segments WHERE merchant_id = $1),
                  (SELECT max(updated_at) FROM segments WHERE merchant_id = $1),
                  (SELECT computed_at FROM segment_rfm WHERE merchant_id = $1)""",
        merchant,
    )
    return tuple(r)


async def put(
    pool: asyncpg.Pool[Any], merchant: str, segment: str, name: str, cond: Condition
) -> Segment:
    with translate_errors("segments write"):
        r = await pool.fetchrow(
            f"""INSERT INTO segments (merchant_id, id, name, condition) VALUES ($1, $2, $3, $4)
                ON CONFLICT (merchant_id, id) DO UPDATE
                   SET name = EXCLUDED.name, condition = EXCLUDED.condition,
                       updated_at = now(), computed_at = NULL
                RETURNING {_COLUMNS}""",
            merchant,
            segment,
            name,
            encode(cond).decode(),
        )
    assert r is not None
    return _segment(r)


async def delete(pool: asyncpg.Pool[Any], merchant: str, segment: str) -> bool:
    with translate_errors("segments write"):
        n = await pool.fetchval(
            "DELETE FROM segments WHERE merchant_id = $1 AND id = $2 RETURNING 1", merchant, segment
        )
    return bool(n)


async def mark_computed(conn: Any, merchant: str, segments: Sequence[str], since: datetime) -> None:
    """The pass that started at ``since`` covered ``segments`` (not a definition changed
    after it started)."""
    await conn.execute(
        """UPDATE segments SET computed_at = now()
            WHERE merchant_id = $1 AND id = ANY($2::text[]) AND updated_at <= $3""",
        merchant,
        list(segments),
        since,
    )


async def sizes(conn: Any, merchant: str) -> dict[str, int]:
    with translate_errors("segments read"):
        rows = await conn.fetch(
            """SELECT segment_id, count(*) AS n FROM segment_members
                WHERE merchant_id = $1 GROUP BY segment_id""",
            merchant,
        )
    return {r["segment_id"]: r["n"] for r in rows}


async def size(conn: Any, merchant: str, segment: str) -> int:
    with translate_errors("segments read"):
        n = await conn.fetchval(
            "SELECT count(*) FROM segment_members WHERE merchant_id = $1 AND segment_id = $2",
            merchant,
            segment,
        )
    return int(n)


async def members_page(
    conn: Any, merchant: str, segment: str, after: str | None, limit: int
) -> list[tuple[str, datetime]]:
    """Members of the segment after ``after``, in member id order (keyset: stable while
    members come and go)."""
    with translate_errors("segments read"):
        rows = await conn.fetch(
            """SELECT member_id, since FROM segment_members
                WHERE merchant_id = $1 AND segment_id = $2 AND ($3::text IS NULL OR member_id > $3)
                ORDER BY member_id LIMIT $4""",
            merchant,
            segment,
            after,
            limit,
        )
    return [(r["member_id"], r["since"]) for r in rows]


async def lock_members(conn: Any, members: Iterable[str]) -> None:
    """The members' segment locks, until the transaction ends (in one order: no deadlock
    between two passes)."""
    await conn.execute(
        """SELECT pg_advisory_xact_lock(k) FROM (
             SELECT DISTINCT hashtextextended('segments/' || m, 0) AS k
               FROM unnest($1::text[]) AS m ORDER BY 1) t""",
        list(members),
    )


async def memberships(
    conn: Any, merchant: str, members: Sequence[str], segments: Sequence[str] | None
) -> dict[str, set[str]]:
    """Each member's segments (of ``segments`` only, when given)."""
    rows = await conn.fetch(
        """SELECT member_id, array_agg(segment_id) FROM segment_members
            WHERE member_id = ANY($1::text[]) AND merchant_id = $2
              AND ($3::text[] IS NULL OR segment_id = ANY($3::text[]))
            GROUP BY member_id""",
        list(members),
        merchant,
        None if segments is None else list(segments),
    )
    return {r[0]: set(r[1]) for r in rows}


async def write(
    conn: Any, merchant: str, entered: list[tuple[str, str]], left: list[tuple[str, str]]
) -> None:
    """(member, segment) pairs in and out."""
    if entered:
        await conn.execute(
            """INSERT INTO segment_members (merchant_id, segment_id, member_id)
               SELECT $1, s, m FROM unnest($2::text[], $3::text[]) AS x(m, s)
                WHERE EXISTS (SELECT 1 FROM segments d WHERE d.merchant_id = $1 AND d.id = x.s)
               ON CONFLICT DO NOTHING""",
            merchant,
            [m for m, _ in entered],
            [s for _, s in entered],
        )
    if left:
        await conn.execute(
            """DELETE FROM segment_members d USING unnest($2::text[], $3::text[]) AS x(m, s)
                WHERE d.merchant_id = $1 AND d.segment_id = x.s AND d.member_id = x.m""",
            merchant,
            [m for m, _ in left],
            [s for _, s in left],
        )


async def cuts(conn: Any, merchant: str) -> Cuts | None:
    r = await conn.fetchrow(
        "SELECT recency, frequency, monetary FROM segment_rfm WHERE merchant_id = $1", merchant
    )
    if r is None:
        return None
    return Cuts(tuple(r["recency"]), tuple(r["frequency"]), tuple(r["monetary"]))


async def put_cuts(conn: Any, merchant: str, c: Cuts) -> None:
    await conn.execute(
        """INSERT INTO segment_rfm (merchant_id, recency, frequency, monetary)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (merchant_id) DO UPDATE
              SET recency = EXCLUDED.recency, frequency = EXCLUDED.frequency,
                  monetary = EXCLUDED.monetary, computed_at = now()""",
        merchant,
        list(c.recency),
        list(c.frequency),
        list(c.monetary),
    )


async def drop_members(conn: Any, members: list[str]) -> None:
    await conn.execute("DELETE FROM segment_members WHERE member_id = ANY($1::text[])", members)


async def memberships_between(
    conn: Any, merchant: str, after: str | None, upto: str | None, segments: Sequence[str] | None
) -> dict[str, set[str]]:
    """The segments (of ``segments`` only, when given) of members with an id after ``after``
    and up to ``upto`` (None: no bound): a full pass reads them by the range its batch covers,
    so a member no longer eligible (erased, merged) leaves its segments too."""
    rows = await conn.fetch(
        """SELECT member_id, array_agg(segment_id) FROM segment_members
            WHERE merchant_id = $1 AND ($2::text IS NULL OR member_id > $2)
              AND ($3::text IS NULL OR member_id <= $3)
              AND ($4::text[] IS NULL OR segment_id = ANY($4::text[]))
            GROUP BY member_id""",
        merchant,
        after,
        upto,
        None if segments is None else list(segments),
    )
    return {r[0]: set(r[1]) for r in rows}
