"""Admin routes of segments (``gateway.segments``), under the admin API's prefix and behind its
authentication: ``GET /segments`` (every definition with its size), ``PUT``, ``GET`` and
``DELETE /segments/{segment}``, ``GET /segments/{segment}/members?after=&limit=`` (keyset
pages, by member id) and ``POST /segments/recompute`` (a full pass now). Another merchant's
token, or an unknown merchant, answers 404 ``not_found`` as on every admin route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import msgspec
from aiohttp import web

from gateway.api.answers import json_answer as _json
from gateway.api.answers import refusal as _error
from gateway.segments import Condition, Segment, Segments, parse
from protocol.limits import ID_MAX_LEN, Id

ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/segments", "list_segments"),
    ("POST", "/segments/recompute", "recompute"),
    ("PUT", "/segments/{segment}", "put_segment"),
    ("GET", "/segments/{segment}", "get_segment"),
    ("DELETE", "/segments/{segment}", "delete_segment"),
    ("GET", "/segments/{segment}/members", "segment_members"),
]

MAX_PAGE = 1_000


class SegmentIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A segment's definition: its ``condition`` tree (docs/loyalty.md, Segments: every kind
    of condition, ``all``/``any``/``not``; an unknown ``type`` or a bad field is 400
    invalid_field and nothing is stored)."""

    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    condition: Condition


class SegmentOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    merchant: str
    segment: str
    name: str
    condition: Condition
    size: int
    """Members in it now."""
    computed_at: str | None
    """When a full pass last finished with this definition (ISO 8601); null while the pass a
    change starts is still to run."""
    updated_at: str


class SegmentList(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    segments: list[SegmentOut]


class SegmentDeleted(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deleted: str


class SegmentMember(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    member: str
    since: str
    """When it entered (ISO 8601)."""


class SegmentMembers(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    segment: str
    members: list[SegmentMember]
    next: str | None
    """The ``after`` of the next page (null on the last)."""


class RecomputeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    segment: Id | None = None
    """Only this segment (default: every segment of the merchant)."""
    rfm: bool = True
    """Compute the RFM quintiles afresh first (false: score against the stored ones)."""


class RecomputeOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    members: int
    entered: int
    left: int
    seconds: float


def _out(s: Segment, size: int) -> SegmentOut:
    return SegmentOut(
        merchant=s.merchant,
        segment=s.id,
        name=s.name,
        condition=s.condition,
        size=size,
        computed_at=None if s.computed_at is None else s.computed_at.isoformat(),
        updated_at=s.updated_at.isoformat(),
    )


class SegmentApi:
    def __init__(
        self, segments: Segments, merchant: Callable[[web.Request], Awaitable[str]]
    ) -> None:
        self._segments = segments
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def list_segments(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        defs = await self._segments.definitions_now(merchant)
        sizes = await self._segments.sizes(merchant)
        return _json(SegmentList(segments=[_out(s, sizes.get(s.id, 0)) for s in defs]))

    async def put_segment(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        raw = await request.read()
        try:
            body = msgspec.json.decode(raw or b"{}", type=SegmentIn)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _error(400, "invalid_field", str(exc))
        cond = parse(msgspec.json.encode(body.condition))  # the semantic checks
        segment = request.match_info["segment"]
        s = await self._segments.put(merchant, segment, body.name, cond)
        return _json(_out(s, await self._segments.size(merchant, segment)))

    async def get_segment(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        segment = request.match_info["segment"]
        s = await self._segments.get(merchant, segment)
        if s is None:
            return _error(404, "not_found", "no such segment")
        return _json(_out(s, await self._segments.size(merchant, segment)))

    async def delete_segment(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        segment = request.match_info["segment"]
        if not await self._segments.delete(merchant, segment):
            return _error(404, "not_found", "no such segment")
        return _json(SegmentDeleted(deleted=segment))

    async def segment_members(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        segment = request.match_info["segment"]
        after = request.query.get("after") or None
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, "invalid_field", "limit is an integer")
        if not 1 <= limit <= MAX_PAGE:
            return _error(400, "invalid_field", f"limit must be within [1, {MAX_PAGE}]")
        if after is not None and len(after) > ID_MAX_LEN:
            return _error(400, "invalid_field", "after is a member id")
        if await self._segments.get(merchant, segment) is None:
            return _error(404, "not_found", "no such segment")
        page = await self._segments.members(merchant, segment, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return _json(
            SegmentMembers(
                segment=segment,
                members=[SegmentMember(member=m, since=at.isoformat()) for m, at in page],
                next=page[-1][0] if more else None,
            )
        )

    async def recompute(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        raw = await request.read()
        try:
            body = msgspec.json.decode(raw or b"{}", type=RecomputeIn)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _error(400, "invalid_field", str(exc))
        only = None
        if body.segment is not None:
            if await self._segments.get(merchant, body.segment) is None:
                return _error(404, "not_found", "no such segment")
            only = [body.segment]
        done = await self._segments.recompute(merchant, only, rfm=body.rfm)
        return _json(
            RecomputeOut(
                members=done.members,
                entered=done.entered,
                left=done.left,
                seconds=round(done.seconds, 3),
            )
        )


__all__ = [
    "ROUTES",
    "RecomputeIn",
    "RecomputeOut",
    "SegmentApi",
    "SegmentDeleted",
    "SegmentIn",
    "SegmentList",
    "SegmentMembers",
    "SegmentOut",
]
