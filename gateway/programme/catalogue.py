"""The merchant's reward catalogue as the rewards service and the cashier read it."""

from __future__ import annotations

from typing import Any

from gateway.programme.model import Reward
from gateway.store.db import translate_errors

_COLUMNS = "id, name, cost, kind, value, sku, min_tier, valid_days, active"


def _reward(r: Any) -> Reward:
    return Reward(
        r["id"],
        r["name"],
        r["cost"],
        r["kind"],
        r["value"],
        r["sku"],
        r["min_tier"],
        r["valid_days"],
        r["active"],
    )


async def list_rewards(conn: Any, merchant: str) -> list[Reward]:
    """Every reward of the merchant, withdrawn ones too, cheapest first."""
    with translate_errors("rewards read"):
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM rewards WHERE merchant_id = $1 ORDER BY cost, id", merchant
        )
    return [_reward(r) for r in rows]


async def find_reward(conn: Any, merchant: str, reward_id: str) -> Reward | None:
    with translate_errors("reward read"):
        r = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM rewards WHERE merchant_id = $1 AND id = $2",
            merchant,
            reward_id,
        )
    return None if r is None else _reward(r)


async def put_reward(conn: Any, merchant: str, r: Reward) -> Reward:
    """Create or replace a reward (codes issued keep the terms they were issued with)."""
    with translate_errors("reward write"):
        row = await conn.fetchrow(
            f"""INSERT INTO rewards (merchant_id, {_COLUMNS})
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (merchant_id, id) DO UPDATE SET
                 name = EXCLUDED.name, cost = EXCLUDED.cost, kind = EXCLUDED.kind,
                 value = EXCLUDED.value, sku = EXCLUDED.sku, min_tier = EXCLUDED.min_tier,
                 valid_days = EXCLUDED.valid_days, active = EXCLUDED.active
               RETURNING {_COLUMNS}""",
            merchant,
            r.id,
            r.name,
            r.cost,
            r.kind,
            r.value,
            r.sku,
            r.min_tier,
            r.valid_days,
            r.active,
        )
    return _reward(row)


async def withdraw_reward(conn: Any, merchant: str, reward_id: str) -> bool:
    """Withdraw a reward from the catalogue (codes already issued stay valid)."""
    with translate_errors("reward write"):
        n = await conn.fetchval(
            "UPDATE rewards SET active = false WHERE merchant_id = $1 AND id = $2 RETURNING 1",
            merchant,
            reward_id,
        )
    return bool(n)
