"""A merchant's birthday rule (table birthday_rules): what is granted (points, or a reward of the
catalogue as a code that costs no points), when (the day, or the first day of the birth month)
and in which time zone (the member's own, else the programme's default; or always the
programme's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from gateway.birthdays.dates import Timing
from gateway.errors import Refused
from gateway.members import check_time_zone
from gateway.programme import find_reward
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.limits import MAX_POINTS

Grant = Literal["points", "reward"]
Zone = Literal["member", "programme"]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as a merchant sets it: ``points`` for a ``points`` grant, ``reward`` (a reward id
    of the catalogue) for a ``reward`` grant; ``time_zone`` is the programme's (its stores')."""

    grant: Grant
    points: int | None = None
    reward: str | None = None
    timing: Timing = "day"
    zone: Zone = "member"
    time_zone: str = "UTC"


@dataclass(frozen=True, slots=True)
class BirthdayRule:
    merchant: str
    grant: Grant
    points: int | None
    reward: str | None
    timing: Timing
    zone: Zone
    time_zone: str
    #: When the rule was first created (kept by updates): occasions whose day had ended by
    #: then are not granted.
    since: datetime
    updated_at: datetime


_COLUMNS = "merchant_id, grant_kind, points, reward_id, timing, zone, time_zone, since, updated_at"


def _rule(r: Any) -> BirthdayRule:
    return BirthdayRule(
        merchant=r["merchant_id"],
        grant=r["grant_kind"],
        points=r["points"],
        reward=r["reward_id"],
        timing=r["timing"],
        zone=r["zone"],
        time_zone=r["time_zone"],
        since=r["since"],
        updated_at=r["updated_at"],
    )


async def check(pool: asyncpg.Pool[Any], merchant: str, spec: RuleSpec) -> None:
    """Refuse a rule that could not grant: a points grant of no points (or more than one
    operation may move), a reward that is not in the merchant's catalogue or was withdrawn, a
    time zone the node does not know."""
    if spec.grant == "points":
        if spec.reward is not None or spec.points is None:
            raise Refused("a points grant takes points, not reward", ErrorCode.INVALID_FIELD)
        if not 1 <= spec.points <= MAX_POINTS:
            raise Refused(f"points must be 1..{MAX_POINTS}", ErrorCode.INVALID_FIELD)
    else:
        if spec.points is not None or spec.reward is None:
            raise Refused("a reward grant takes reward, not points", ErrorCode.INVALID_FIELD)
        found = await find_reward(pool, merchant, spec.reward)
        if found is None or not found.active:
            raise Refused(f"no reward {spec.reward!r} in the catalogue", ErrorCode.REWARD_NOT_FOUND)
    check_time_zone(spec.time_zone)


async def get_rule(pool: asyncpg.Pool[Any], merchant: str) -> BirthdayRule | None:
    with translate_errors("birthday rule read"):
        r = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM birthday_rules WHERE merchant_id = $1", merchant
        )
    return None if r is None else _rule(r)


async def all_rules(pool: asyncpg.Pool[Any], merchant: str | None = None) -> list[BirthdayRule]:
    """Every merchant's rule (the job), or ``merchant``'s only."""
    with translate_errors("birthday rules read"):
        rows = await pool.fetch(
            f"""SELECT {_COLUMNS} FROM birthday_rules
                 WHERE $1::text IS NULL OR merchant_id = $1 ORDER BY merchant_id""",
            merchant,
        )
    return [_rule(r) for r in rows]


async def put_rule(pool: asyncpg.Pool[Any], merchant: str, spec: RuleSpec) -> BirthdayRule:
    """Create or replace the merchant's rule (checked first: a refusal changes nothing); an
    update keeps the rule's ``since``."""
    await check(pool, merchant, spec)
    with translate_errors("birthday rule write"):
        try:
            r = await pool.fetchrow(
                f"""INSERT INTO birthday_rules
                        (merchant_id, grant_kind, points, reward_id, timing, zone, time_zone)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (merchant_id) DO UPDATE SET
                        grant_kind = EXCLUDED.grant_kind, points = EXCLUDED.points,
                        reward_id = EXCLUDED.reward_id, timing = EXCLUDED.timing,
                        zone = EXCLUDED.zone, time_zone = EXCLUDED.time_zone,
                        updated_at = now()
                    RETURNING {_COLUMNS}""",
                merchant,
                spec.grant,
                spec.points,
                spec.reward,
                spec.timing,
                spec.zone,
                spec.time_zone,
            )
        except asyncpg.ForeignKeyViolationError:  # the merchant, or a reward, is not there
            raise Refused("", ErrorCode.REWARD_NOT_FOUND) from None
    assert r is not None
    return _rule(r)


async def delete_rule(pool: asyncpg.Pool[Any], merchant: str) -> bool:
    """Stop granting (the grants made stay). False when there was no rule."""
    with translate_errors("birthday rule write"):
        n = await pool.fetchval(
            "DELETE FROM birthday_rules WHERE merchant_id = $1 RETURNING 1", merchant
        )
    return bool(n)


__all__ = [
    "BirthdayRule",
    "Grant",
    "RuleSpec",
    "Zone",
    "all_rules",
    "check",
    "delete_rule",
    "get_rule",
    "put_rule",
]
