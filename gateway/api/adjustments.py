"""Admin routes of manual points adjustments (``gateway.adjustments``), under the admin API's
prefix and behind its authentication: ``POST .../members/{member}/adjustments`` credits or
debits, ``GET`` lists them. Who made one is the admin token's reach (``operator`` or
``merchant:<id>``), kept with the adjustment and in the audit log. ``DOCS`` is how
openapi.json describes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from aiohttp import web

from gateway.adjustments import Adjusted, Adjustment, Adjustments
from gateway.api.answers import json_answer as _json
from gateway.api.routedoc import INVALID, NOT_FOUND, Route
from gateway.merchant_keys import ANY_MERCHANT
from protocol.limits import MAX_POINTS, Id
from protocol.messages import Balance

#: Every route: method, path under the admin prefix, and the ``AdjustmentApi`` method serving it.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/members/{member}/adjustments", "adjust"),
    ("GET", "/members/{member}/adjustments", "list"),
]

#: The request's key the admin middleware leaves the token's reach under.
REACH: web.RequestKey[str] = web.RequestKey("admin_reach", str)


class AdjustIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    op: Id
    """The adjustment's id, chosen by the caller: a retry with the same id and body applies
    nothing again and answers the same; another body under it is 409 idempotency_conflict."""
    points: Annotated[
        int,
        msgspec.Meta(
            ge=-MAX_POINTS,
            le=MAX_POINTS,
            description="Points to credit (> 0) or debit (< 0); not 0. A debit beyond what is "
            "available is 409 insufficient_points.",
        ),
    ]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    """Why (shown to whoever reads the member's adjustments and in the audit log)."""


class AdjustedOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    op: str
    member: str
    """The member adjusted: a merged duplicate's survivor."""
    points: int
    reason: str
    balance: Balance


class AdjustmentOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    op: str
    points: int
    reason: str
    actor: str
    """``operator``, or ``merchant:<id>`` for a merchant's own admin token."""
    at: int
    """Milliseconds since the Unix epoch."""


class AdjustmentsOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    member: str
    adjustments: list[AdjustmentOut]
    """Newest first; the next page is ``before`` the last one's ``at``."""


DOCS: dict[tuple[str, str], Route] = {
    ("POST", "/members/{member}/adjustments"): Route(
        "Credit or debit a member's points by hand, with a reason (ledger entry kind "
        "`adjustment`, pushed live like any change); idempotent per `op`",
        AdjustIn,
        AdjustedOut,
        {
            400: (INVALID,),
            404: (NOT_FOUND, "member_not_found"),
            409: ("insufficient_points", "idempotency_conflict", "member_merged"),
            503: ("unavailable", "timeout"),
        },
        body_required=True,
    ),
    ("GET", "/members/{member}/adjustments"): Route(
        "A member's adjustments, newest first, by page",
        None,
        AdjustmentsOut,
        {400: (INVALID,), 404: (NOT_FOUND, "member_not_found")},
        query=(
            ("before", {"type": "integer", "minimum": 0}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
        ),
    ),
}


def _bad(message: str) -> web.Response:
    return _json({"error": INVALID, "message": message}, 400)


def _out(a: Adjusted) -> AdjustedOut:
    return AdjustedOut(
        op=a.op, member=a.member, points=a.points, reason=a.reason, balance=a.balance
    )


def _row(a: Adjustment) -> AdjustmentOut:
    return AdjustmentOut(op=a.op, points=a.points, reason=a.reason, actor=a.actor, at=a.at)


class AdjustmentApi:
    def __init__(
        self, adjustments: Adjustments, merchant: Callable[[web.Request], Awaitable[str]]
    ) -> None:
        self._adjustments = adjustments
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def adjust(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        try:
            b = msgspec.json.decode(await request.read() or b"{}", type=AdjustIn)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _bad(str(exc))
        reach = request.get(REACH, ANY_MERCHANT)
        actor = "operator" if reach == ANY_MERCHANT else f"merchant:{reach}"
        done = await self._adjustments.adjust(
            merchant, request.match_info["member"], b.op, b.points, b.reason.strip() or "-", actor
        )
        return _json(_out(done))

    async def list(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        q = request.query
        try:
            limit = int(q.get("limit", "20"))
            before_ms = int(q["before"]) if "before" in q else None
        except ValueError:
            return _bad("before and limit are integers")
        if not 1 <= limit <= 100 or (before_ms is not None and before_ms < 0):
            return _bad("limit is 1..100, before a time in milliseconds")
        before = None if before_ms is None else datetime.fromtimestamp(before_ms / 1000, UTC)
        member = request.match_info["member"]
        rows = await self._adjustments.list(merchant, member, before, limit)
        return _json(AdjustmentsOut(member=member, adjustments=[_row(a) for a in rows]))


__all__ = ["DOCS", "REACH", "ROUTES", "AdjustIn", "AdjustedOut", "AdjustmentApi"]
