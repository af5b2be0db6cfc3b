"""Which returns count. The ledger records each return's state on its row in the same
transaction as the return's entry (``returns.RETURN_STATE``: applied or refused); a row still
``pending`` is a return in flight, or one whose node stopped before the ledger answered or
before it deleted the row of a refusal, or one written by a node of the previous release.
``settle`` asks the ledger about pending rows and records what it holds under their ids: an
applied return, or something else (a refusal, or another operation that took the id), which
never counts. What the ledger holds nothing under stays pending."""

from __future__ import annotations

from typing import Any

from gateway.ledger import recorded_many
from gateway.store.db import translate_errors

#: A return counts against what is left of its sale and in tier points unless it was refused.
COUNTED = "r.state <> 'refused'"

_SETTLE = """
UPDATE sale_returns r SET state = x.state
  FROM unnest($2::text[], $3::text[]) AS x(op_id, state)
 WHERE r.merchant_id = $1 AND r.op_id = x.op_id AND r.state = 'pending'
"""


async def settle(conn: Any, merchant: str, pending: list[str]) -> dict[str, str]:
    """The states of the pending returns ``pending`` (op ids) the ledger has answered, now
    recorded on their rows too; those it holds nothing under are left out."""
    if not pending:
        return {}
    found = await recorded_many(conn, merchant, pending)
    states = {op: "applied" if r.applied("return") else "refused" for op, r in found.items()}
    if states:
        with translate_errors("return state"):
            await conn.execute(_SETTLE, merchant, list(states), list(states.values()))
    return states


async def counted(conn: Any, merchant: str, rows: list[Any]) -> list[Any]:
    """Of ``sale_returns`` rows (with ``op_id`` and ``state``), those that count."""
    pending = [r["op_id"] for r in rows if r["state"] == "pending"]
    states = await settle(conn, merchant, pending)
    return [r for r in rows if states.get(r["op_id"], r["state"]) != "refused"]
