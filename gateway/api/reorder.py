"""Admin routes of the reorder loops (``gateway.reorder``), under the admin API's prefix and
behind its authentication (``admin.auth_middleware``): ``GET``, ``PUT`` and ``DELETE
/admin/v1/merchants/{merchant}/reorder-loops/{loop}``. Another merchant's token, or an
unknown merchant, answers 404 ``not_found`` as on every admin route. The body is the
domain's own ``LoopSpec`` (one definition of its limits)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
from aiohttp import web

from gateway.api.answers import json_answer as _json
from gateway.api.routedoc import INVALID, NOT_FOUND, Route
from gateway.reorder import Loop, LoopSpec, Reorder, Report, csv_text, svg

#: Every route: method, path under the admin prefix, and the ``ReorderApi`` method serving it.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/reorder-loops/{loop}", "get_loop"),
    ("PUT", "/reorder-loops/{loop}", "put_loop"),
    ("DELETE", "/reorder-loops/{loop}", "delete_loop"),
    ("GET", "/reorder-loops/{loop}/report", "get_report"),
    ("GET", "/reorder-loops/{loop}/report.csv", "get_report_csv"),
    ("GET", "/reorder-loops/{loop}/report.svg", "get_report_svg"),
]


class LoopOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    merchant: str
    loop: str
    spec: LoopSpec
    created_at: str
    updated_at: str


class LoopDeleted(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deleted: Literal["reorder_loop"]
    loop: str


def loop_out(r: Loop) -> LoopOut:
    return LoopOut(
        merchant=r.merchant,
        loop=r.loop,
        spec=r.spec,
        created_at=r.created_at.isoformat(),
        updated_at=r.updated_at.isoformat(),
    )


def _not_found() -> web.Response:
    return _json({"error": "not_found", "message": "no such reorder loop"}, 404)


class ReorderApi:
    """The routes over ``loops``; ``merchant`` is the admin API's check of the path's merchant
    (it raises when the merchant does not exist)."""

    def __init__(self, reorder: Reorder, merchant: Callable[[web.Request], Awaitable[str]]) -> None:
        self._reorder = reorder
        self._loops = reorder.loops
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def get_loop(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        loop = await self._loops.get(merchant, request.match_info["loop"])
        return _not_found() if loop is None else _json(loop_out(loop))

    async def put_loop(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        try:
            spec = msgspec.json.decode(await request.read() or b"{}", type=LoopSpec)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _json({"error": "invalid_field", "message": str(exc)}, 400)
        loop = await self._loops.put(merchant, request.match_info["loop"], spec)
        return _json(loop_out(loop))

    async def delete_loop(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        loop = request.match_info["loop"]
        if not await self._loops.delete(merchant, loop):
            return _not_found()
        return _json(LoopDeleted(deleted="reorder_loop", loop=loop))

    async def _report(self, request: web.Request) -> Report | None:
        merchant = await self._merchant(request)
        return await self._reorder.report(merchant, request.match_info["loop"])

    async def get_report(self, request: web.Request) -> web.Response:
        r = await self._report(request)
        return _not_found() if r is None else _json(ReportOut.of(r))

    async def get_report_csv(self, request: web.Request) -> web.Response:
        r = await self._report(request)
        if r is None:
            return _not_found()
        return web.Response(
            text=csv_text(r),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{r.loop}-report.csv"'},
        )

    async def get_report_svg(self, request: web.Request) -> web.Response:
        r = await self._report(request)
        if r is None:
            return _not_found()
        return web.Response(
            text=svg(r),
            content_type="image/svg+xml",
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
        )


class GroupOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    reminders: int
    """Settled reminders of the group (their window ended, or they were repurchased)."""
    members: int
    repurchased: int
    rate: float
    rate_low: float
    """The rate's 95 % Wilson score interval."""
    rate_high: float
    revenue: int
    """The product's purchases in the repurchased reminders' windows (minor units)."""
    revenue_per_member: float
    points: int
    """Reward points granted (the control group's are 0)."""
    points_per_member: float


class UpliftOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    absolute: float
    """Treated rate - control rate."""
    absolute_low: float
    """95 % interval: Newcombe's hybrid score method (10)."""
    absolute_high: float
    relative: float | None
    """Treated rate / control rate - 1 (none without a control repurchase)."""
    relative_low: float | None
    """95 % interval of the log risk ratio (Katz)."""
    relative_high: float | None
    z: float | None
    """The pooled two-proportion z statistic."""
    p_value: float | None


class MessagesOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    sent: int
    failed: int
    skipped: int
    pending: int
    unsubscribed: int
    clicked: int
    """Reminders whose cart link was opened."""
    clicks: int


class ReportOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    merchant: str
    loop: str
    window_days: int
    at: str
    open: int
    """Reminders whose window has not ended yet (not counted)."""
    treated: GroupOut
    control: GroupOut
    uplift: UpliftOut
    messages: MessagesOut

    @classmethod
    def of(cls, r: Report) -> ReportOut:
        return cls(
            merchant=r.merchant,
            loop=r.loop,
            window_days=r.window_days,
            at=r.at.isoformat(),
            open=r.open,
            treated=msgspec.convert(r.treated, GroupOut, from_attributes=True),
            control=msgspec.convert(r.control, GroupOut, from_attributes=True),
            uplift=msgspec.convert(r.uplift, UpliftOut, from_attributes=True),
            messages=msgspec.convert(r.messages, MessagesOut, from_attributes=True),
        )


#: How openapi.json documents the routes.
DOCS: dict[tuple[str, str], Route] = {
    ("GET", "/reorder-loops/{loop}"): Route(
        "Read a reorder loop (404 not_found when there is none)", None, LoopOut
    ),
    ("PUT", "/reorder-loops/{loop}"): Route(
        "Create or replace a reorder loop: its replenishable products, the lead days before "
        "each member's predicted repurchase date, up to 3 messages (sandboxed Jinja2 "
        "templates, variables name, product, incentive, link; each rendered with sample "
        "values before it is stored), the incentive, channels, quiet hours, the frequency cap "
        "per member across loops and the control share. 400 invalid_field: an unknown or "
        "durable product, a template that does not render or reaches for Python internals, "
        "a bad field; nothing is stored (docs/reorder.md, Loops)",
        LoopSpec,
        LoopOut,
        {400: (INVALID, "time_zone_unknown"), 404: (NOT_FOUND, "reward_not_found")},
        body_required=True,
    ),
    ("DELETE", "/reorder-loops/{loop}"): Route(
        "Delete a reorder loop (404 not_found when there is none)", None, LoopDeleted
    ),
    ("GET", "/reorder-loops/{loop}/report"): Route(
        "The loop's uplift report: treated against control reminders, their repurchase rates "
        "within the attribution window (95 % Wilson intervals), the absolute uplift with "
        "Newcombe's hybrid score interval, the relative uplift with the log risk ratio's, the "
        "z-test's p-value, revenue and points cost per member, and the messages sent, failed, "
        "skipped, unsubscribed and clicked (docs/reorder.md, Uplift report)",
        None,
        ReportOut,
    ),
    ("GET", "/reorder-loops/{loop}/report.csv"): Route(
        "The report as CSV: a row per group", None, {"type": "string"}, answer_media="text/csv"
    ),
    ("GET", "/reorder-loops/{loop}/report.svg"): Route(
        "The report at a glance: an SVG chart of both rates with their intervals and the uplift",
        None,
        {"type": "string"},
        answer_media="image/svg+xml",
    ),
}

__all__ = ["DOCS", "ROUTES", "LoopDeleted", "LoopOut", "ReorderApi", "ReportOut"]
