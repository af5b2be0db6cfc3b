"""What the aggregates answer: chosen figures of many members at once (``features``: the
segments' facts, live for one member and in batches for a full recompute, through the same
statement) and one member's summary (the cashier view, the data export)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

from gateway.aggregates.facts import BRAND, CATEGORY, CHANNEL, SKU, TOTAL
from gateway.store.db import translate_errors

Measure = Literal["units", "spend", "visits", "last"]
EPOCH = date(1970, 1, 1)


def day_of(at: datetime) -> int:
    """The aggregates' day of an instant: days since 1970-01-01, UTC."""
    return (at.astimezone(UTC).date() - EPOCH).days


def day_date(day: int) -> date:
    return EPOCH + timedelta(days=day)


class Feature(NamedTuple):
    """One figure of a member: the sum of ``measure`` over the days since ``since`` (a day
    number, inclusive; None: every day) of one dimension and key (``dim`` ``t`` and key '':
    the totals), or for ``last`` the latest day with a purchase (None when there is none).
    A tuple: a full pass looks up millions of them."""

    dim: str
    key: str
    measure: Measure
    since: int | None = None


def _features_sql(specs: Sequence[Feature]) -> tuple[str, list[Any]]:
    params: list[Any] = []

    def p(value: Any, cast: str) -> str:
        params.append(value)
        return f"${len(params) + 2}::{cast}"

    cols = []
    char = "text"
    for f in specs:
        cond = f"dim = {p(f.dim, char)} AND key = {p(f.key, 'text')}"
        if f.since is not None:
            cond += f" AND day >= {p(f.since, 'int')}"
        if f.measure == "last":
            cols.append(f"max(day) FILTER (WHERE {cond} AND visits > 0)")
        else:
            cols.append(f"COALESCE(sum({f.measure}) FILTER (WHERE {cond}), 0)::int8")
    select = ", ".join(f"{c} AS f{i}" for i, c in enumerate(cols)) or "0 AS f0"
    # only the rows of the dimensions and keys asked for reach the aggregates (a member's
    # other SKUs and categories are most of its rows)
    keys = sorted({f"{f.dim}/{f.key}" for f in specs})
    sql = f"""SELECT member_id, {select} FROM member_purchase_days
               WHERE merchant_id = $1 AND member_id = ANY($2::text[])
                 AND dim || '/' || key = ANY({p(keys, "text[]")})
               GROUP BY member_id"""
    return sql, params


def _blank(specs: Sequence[Feature]) -> tuple[int | None, ...]:
    return tuple(None if f.measure == "last" else 0 for f in specs)


async def features(
    conn: Any, merchant: str, members: Sequence[str], specs: Sequence[Feature]
) -> dict[str, tuple[int | None, ...]]:
    """Each of ``members``' figures ``specs``, in their order (0, or None for ``last``, for a
    member that bought nothing)."""
    if not members:
        return {}
    blank = _blank(specs)
    if not specs:
        return dict.fromkeys(members, blank)
    sql, params = _features_sql(specs)
    with translate_errors("aggregates read"):
        rows = await conn.fetch(sql, merchant, list(members), *params)
    out = dict.fromkeys(members, blank)
    for r in rows:
        out[r["member_id"]] = tuple(r[i + 1] for i in range(len(specs)))
    return out


@dataclass(frozen=True, slots=True)
class Bought:
    key: str
    units: int
    spend: int
    visits: int
    last: date | None


@dataclass(frozen=True, slots=True)
class Summary:
    """A member's lifetime purchase figures."""

    spend: int
    visits: int
    units: int
    first: date | None
    last: date | None
    channels: dict[str, int]
    categories: list[Bought]
    brands: list[Bought]
    skus: list[Bought]


_SUMMARY = """
SELECT dim, key, sum(units)::int8 AS units, sum(spend)::int8 AS spend, sum(visits)::int8 AS visits,
       min(day) FILTER (WHERE visits > 0) AS first, max(day) FILTER (WHERE visits > 0) AS last
  FROM member_purchase_days
 WHERE member_id = $2 AND merchant_id = $1
 GROUP BY dim, key
"""


async def summary(conn: Any, merchant: str, member: str, top: int = 10) -> Summary:
    """The member's totals, visits by channel, and its categories, brands and SKUs, most
    bought first (by units, then spend; ``top`` of each)."""
    with translate_errors("aggregates read"):
        rows = await conn.fetch(_SUMMARY, merchant, member)
    spend = visits = units = 0
    first = last = None
    channels: dict[str, int] = {}
    by: dict[str, list[Bought]] = {CATEGORY: [], BRAND: [], SKU: []}
    for r in rows:
        if r["dim"] == TOTAL:
            spend, visits, units = r["spend"], r["visits"], r["units"]
            first = None if r["first"] is None else day_date(r["first"])
            last = None if r["last"] is None else day_date(r["last"])
        elif r["dim"] == CHANNEL:
            channels[r["key"]] = r["visits"]
        else:
            lst = None if r["last"] is None else day_date(r["last"])
            by[r["dim"]].append(Bought(r["key"], r["units"], r["spend"], r["visits"], lst))
    for v in by.values():
        v.sort(key=lambda b: (-b.units, -b.spend, b.key))
    return Summary(
        spend=spend,
        visits=visits,
        units=units,
        first=first,
        last=last,
        channels=channels,
        categories=by[CATEGORY][:top],
        brands=by[BRAND][:top],
        skus=by[SKU][:top],
    )


_QUINTILES = """
WITH m AS (
  SELECT member_id, max(day) FILTER (WHERE visits > 0) AS last,
         COALESCE(sum(visits) FILTER (WHERE day >= $3), 0) AS f,
         COALESCE(sum(spend) FILTER (WHERE day >= $3), 0) AS s
    FROM member_purchase_days
   WHERE merchant_id = $1 AND dim = 't'
   GROUP BY member_id
)
SELECT percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY $2 - last)
           FILTER (WHERE last IS NOT NULL) AS r,
       percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY f) AS f,
       percentile_disc(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY s) AS m
  FROM m WHERE last IS NOT NULL
"""


async def quintiles(
    conn: Any, merchant: str, today: int, window: int
) -> tuple[list[int], list[int], list[int]]:
    """The 20th, 40th, 60th and 80th percentiles, over the merchant's members that ever
    bought, of the days since their latest purchase, and of their visits and spend over the
    ``window`` days to ``today`` (empty lists when nobody bought)."""
    with translate_errors("aggregates read"):
        r = await conn.fetchrow(_QUINTILES, merchant, today, today - window + 1)
    if r is None or r["r"] is None:
        return [], [], []
    return list(r["r"]), [int(x) for x in r["f"]], [int(x) for x in r["m"]]
