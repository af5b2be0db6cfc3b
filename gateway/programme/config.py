"""The programme's configuration, as the admin API changes and reads it: the merchant and its
programme settings, earning rules, the tier ladder and the reward catalogue. Every write
invalidates this node's programme cache (other nodes within ``programmes.CACHE_SECONDS``)."""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.programme.catalogue import list_rewards, put_reward, withdraw_reward
from gateway.programme.model import Reward, Rule, Tier, plain
from gateway.programme.programmes import Programmes
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode

#: Programme settings by column, and those a ``None`` clears (the others always hold a value).
SETTINGS = (
    "region",
    "rounding",
    "max_points_per_sale",
    "tier_window_days",
    "expiry_days",
    "code_valid_days",
)
NULLABLE = frozenset({"max_points_per_sale", "expiry_days"})

_RULE_COLUMNS = (
    "id, kind, name, sku, category, multiplier, bonus, min_total, tier, starts_at, ends_at"
)


async def create_merchant(
    conn: Any,
    merchant: str,
    name: str = "",
    points_per_unit: Decimal | int = 1,
    currency: str = "USD",
) -> None:
    """The merchant, if it does not exist yet (its programme takes the defaults)."""
    await conn.execute(
        """INSERT INTO merchants (id, name, points_per_unit, currency) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO NOTHING""",
        merchant,
        name or merchant,
        Decimal(points_per_unit),
        currency,
    )


def _invalid(message: str) -> Refused:
    return Refused(message, ErrorCode.INVALID_FIELD)


def _rule_out(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "kind": r["kind"],
        "name": r["name"],
        "sku": r["sku"],
        "category": r["category"],
        "multiplier": plain(Decimal(r["multiplier"])),
        "bonus": r["bonus"],
        "min_total": r["min_total"],
        "tier": r["tier"],
        "starts_at": r["starts_at"].isoformat() if r["starts_at"] else None,
        "ends_at": r["ends_at"].isoformat() if r["ends_at"] else None,
    }


class ProgrammeConfig:
    def __init__(self, pool: asyncpg.Pool[Any], programmes: Programmes) -> None:
        self._pool = pool
        self._programmes = programmes

    def reload(self, merchant: str) -> None:
        """Read the merchant's programme afresh at its next use on this node."""
        self._programmes.invalidate(merchant)

    async def exists(self, merchant: str) -> bool:
        with translate_errors("merchant read"):
            return bool(
                await self._pool.fetchval("SELECT 1 FROM merchants WHERE id = $1", merchant)
            )

    # ------------------------------------------------------------------ the programme
    async def view(self, merchant: str) -> dict[str, Any]:
        self._programmes.invalidate(merchant)
        p = await self._programmes.get(merchant)
        with translate_errors("merchant read"):
            name = await self._pool.fetchval("SELECT name FROM merchants WHERE id = $1", merchant)
        return {
            "merchant": merchant,
            "name": name,
            "currency": p.currency,
            "points_per_unit": plain(p.points_per_unit),
            "region": p.region,
            "rounding": p.rounding,
            "max_points_per_sale": p.max_points_per_sale,
            "tier_window_days": p.tier_window_days,
            "expiry_days": p.expiry_days,
            "code_valid_days": p.code_valid_days,
        }

    async def update(
        self,
        merchant: str,
        *,
        name: str | None,
        currency: str | None,
        points_per_unit: Decimal | None,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        """Create the merchant if need be and set what is given: ``settings`` holds the
        programme settings present in the request (``None`` clears a nullable one)."""
        with translate_errors("programme write"):
            async with self._pool.acquire() as conn, conn.transaction():
                await create_merchant(conn, merchant, name or merchant)
                await conn.execute(
                    """UPDATE merchants SET name = COALESCE($2, name),
                              currency = COALESCE($3, currency),
                              points_per_unit = COALESCE($4::numeric, points_per_unit)
                        WHERE id = $1""",
                    merchant,
                    name,
                    currency,
                    points_per_unit,
                )
                await conn.execute(
                    "INSERT INTO programmes (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    merchant,
                )
                for column in SETTINGS:
                    if column in settings:
                        if settings[column] is None and column not in NULLABLE:
                            raise _invalid(f"{column} may not be null")
                        await conn.execute(
                            f"UPDATE programmes SET {column} = $2, updated_at = now() "
                            "WHERE merchant_id = $1",
                            merchant,
                            settings[column],
                        )
        return await self.view(merchant)

    # ------------------------------------------------------------------ rules
    async def rules(self, merchant: str) -> list[dict[str, Any]]:
        with translate_errors("rules read"):
            rows = await self._pool.fetch(
                f"SELECT {_RULE_COLUMNS} FROM earning_rules WHERE merchant_id = $1 ORDER BY id",
                merchant,
            )
        return [_rule_out(r) for r in rows]

    async def put_rule(self, merchant: str, rule: Rule) -> dict[str, Any]:
        if rule.kind == "product" and rule.sku is None:
            raise _invalid("a product rule needs sku")
        if rule.kind == "category" and rule.category is None:
            raise _invalid("a category rule needs category")
        with translate_errors("rule write"):
            row = await self._pool.fetchrow(
                f"""INSERT INTO earning_rules (merchant_id, {_RULE_COLUMNS})
                   VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8, $9, $10, $11, $12)
                   ON CONFLICT (merchant_id, id) DO UPDATE SET
                     kind = EXCLUDED.kind, name = EXCLUDED.name, sku = EXCLUDED.sku,
                     category = EXCLUDED.category, multiplier = EXCLUDED.multiplier,
                     bonus = EXCLUDED.bonus, min_total = EXCLUDED.min_total,
                     tier = EXCLUDED.tier, starts_at = EXCLUDED.starts_at,
                     ends_at = EXCLUDED.ends_at
                   RETURNING {_RULE_COLUMNS}""",
                merchant,
                rule.id,
                rule.kind,
                rule.name,
                rule.sku,
                rule.category,
                rule.multiplier,
                rule.bonus,
                rule.min_total,
                rule.tier,
                rule.starts_at,
                rule.ends_at,
            )
        self._programmes.invalidate(merchant)
        return _rule_out(row)

    async def delete_rule(self, merchant: str, rule: str) -> bool:
        with translate_errors("rule delete"):
            n = await self._pool.fetchval(
                "DELETE FROM earning_rules WHERE merchant_id = $1 AND id = $2 RETURNING 1",
                merchant,
                rule,
            )
        self._programmes.invalidate(merchant)
        return bool(n)

    # ------------------------------------------------------------------ tiers
    async def tiers(self, merchant: str) -> list[dict[str, Any]]:
        with translate_errors("tiers read"):
            rows = await self._pool.fetch(
                """SELECT id, name, threshold, multiplier FROM tiers WHERE merchant_id = $1
                    ORDER BY threshold""",
                merchant,
            )
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "threshold": r["threshold"],
                "multiplier": plain(Decimal(r["multiplier"])),
            }
            for r in rows
        ]

    async def replace_tiers(self, merchant: str, tiers: list[Tier]) -> list[dict[str, Any]]:
        if len({t.id for t in tiers}) != len(tiers) or len({t.threshold for t in tiers}) != len(
            tiers
        ):
            raise _invalid("tier ids and thresholds must be unique")
        with translate_errors("tiers write"):
            async with self._pool.acquire() as conn, conn.transaction():
                # One writer of a merchant's tiers at a time: two at once (a retry after a
                # timeout) each deleted only the rows their snapshot saw, and the second's
                # inserts hit the first's rows (a 500).
                await conn.execute("SELECT 1 FROM merchants WHERE id = $1 FOR UPDATE", merchant)
                await conn.execute("DELETE FROM tiers WHERE merchant_id = $1", merchant)
                await conn.executemany(
                    """INSERT INTO tiers (merchant_id, id, name, threshold, multiplier)
                       VALUES ($1, $2, $3, $4, $5::numeric)""",
                    [(merchant, t.id, t.name, t.threshold, t.multiplier) for t in tiers],
                )
        self._programmes.invalidate(merchant)
        return await self.tiers(merchant)

    # ------------------------------------------------------------------ rewards
    async def rewards(self, merchant: str) -> list[dict[str, Any]]:
        return [asdict(r) for r in await list_rewards(self._pool, merchant)]

    async def put_reward(self, merchant: str, reward: Reward) -> dict[str, Any]:
        if reward.kind == "free_item" and reward.sku is None:
            raise _invalid("a free_item reward needs sku")
        done = asdict(await put_reward(self._pool, merchant, reward))
        self._programmes.invalidate(merchant)
        return done

    async def withdraw_reward(self, merchant: str, reward: str) -> bool:
        done = await withdraw_reward(self._pool, merchant, reward)
        self._programmes.invalidate(merchant)
        return done
