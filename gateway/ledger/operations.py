"""What other packages may ask of the ledger's recorded operations (``operations``): whether an
id is taken, by what kind of operation, and with what outcome. Run on the caller's connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.ledger.model import decode_outcome
from gateway.store.db import translate_errors
from protocol.messages import Outcome

_RECORDED = """
SELECT op_id, kind, ok, result FROM operations WHERE merchant_id = $1 AND op_id = ANY($2::text[])
"""


@dataclass(frozen=True, slots=True)
class Recorded:
    """An operation the ledger recorded under an id: its kind (``earn``, ``return``,
    ``commit``, ...), whether it applied, and the outcome it replays."""

    kind: str
    ok: bool
    outcome: Outcome

    def applied(self, kind: str) -> bool:
        return self.ok and self.kind == kind


async def recorded(conn: Any, merchant: str, op: str, *, lock: bool = False) -> Recorded | None:
    """The operation recorded under ``op``, if any. With ``lock``, its row stays locked until
    the caller's transaction ends (two returns citing one redemption are planned one after the
    other)."""
    sql = "SELECT kind, ok, result FROM operations WHERE merchant_id = $1 AND op_id = $2"
    with translate_errors("operation read"):
        r = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), merchant, op)
    if r is None:
        return None
    return Recorded(r["kind"], r["ok"], decode_outcome(r["result"]))


async def recorded_many(conn: Any, merchant: str, ops: list[str]) -> dict[str, Recorded]:
    """The operations recorded under any of ``ops``, by id."""
    if not ops:
        return {}
    with translate_errors("operation read"):
        rows = await conn.fetch(_RECORDED, merchant, ops)
    return {r["op_id"]: Recorded(r["kind"], r["ok"], decode_outcome(r["result"])) for r in rows}
