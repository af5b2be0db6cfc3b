"""Points for a sale: the merchant's base rate applied to the amount paid.

``points = floor(total_minor / 100 * points_per_unit)``: earning rounds down, so a shopper is
never credited a fraction the programme did not grant. The breakdown is returned to the POS
for the receipt.
"""

from __future__ import annotations

import time
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import asyncpg
import msgspec

from gateway.errors import Refused
from gateway.ledger.model import Earn, Origin
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.limits import MAX_POINTS
from protocol.messages import PointsLine, Sale

_CACHE_SECONDS = 30.0


class Earning:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool
        self._rates: dict[str, tuple[float, Decimal]] = {}

    async def rate(self, merchant: str) -> Decimal:
        hit = self._rates.get(merchant)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        with translate_errors("merchant lookup"):
            rate = await self._pool.fetchval(
                "SELECT points_per_unit FROM merchants WHERE id = $1", merchant
            )
        if rate is None:
            raise Refused("unknown merchant", ErrorCode.FORBIDDEN)
        self._rates[merchant] = (now + _CACHE_SECONDS, Decimal(rate))
        return Decimal(rate)

    async def for_sale(self, merchant: str, sale: Sale, origin: Origin) -> Earn:
        rate = await self.rate(merchant)
        base = int((Decimal(sale.total) * rate / 100).to_integral_value(rounding=ROUND_FLOOR))
        points = min(base, MAX_POINTS)
        return Earn(
            op=sale.op,
            member=sale.member,
            points=points,
            origin=origin,
            kind="earn",
            breakdown=(PointsLine(rule="base", points=points),),
            detail=msgspec.json.encode((sale.total, sale.lines)),
        )
