"""A code's redemption: one conditional UPDATE, so of two registers presenting a code at the
same instant exactly one wins, with its ``code.used`` webhook event in the same transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.events import WebhookEventSink
from gateway.ledger import Origin


async def redeem_code(
    pool: asyncpg.Pool[Any], hooks: WebhookEventSink | None, origin: Origin, code: str, op: str
) -> bool:
    """Whether this call redeemed the (issued, unexpired) code."""
    async with pool.acquire() as conn, conn.transaction():
        won = await conn.fetchrow(
            """UPDATE reward_codes
                  SET status = 'redeemed', redeemed_at = now(), redeemed_op = $3,
                      redeemed_channel = $4, redeemed_store = $5, redeemed_terminal = $6
                WHERE merchant_id = $1 AND code = $2 AND status = 'issued'
                  AND expires_at > now()
               RETURNING member_id, reward_id""",
            origin.merchant,
            code.upper(),
            op,
            origin.channel,
            origin.store,
            origin.terminal,
        )
        if won is not None and hooks is not None:
            where = {"channel": origin.channel, "store": origin.store, "terminal": origin.terminal}
            data = {"member": won["member_id"], "code": code.upper(), "reward": won["reward_id"]}
            await hooks.record(
                conn, origin.merchant, won["member_id"], "code.used", {**data, "op": op, **where}
            )
    return won is not None
