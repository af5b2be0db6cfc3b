"""Admin routes of the webhooks (``gateway.webhooks``), under the admin API's prefix and behind
its authentication (``admin.auth_middleware``): a merchant's endpoints (create, list, read,
change, delete, rotate the secret) and their deliveries (list, by state; replay one, or every
failed one). Another merchant's token, or an unknown merchant, answers 404 ``not_found`` as on
every admin route; so does another merchant's endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal, TypeVar

import msgspec
from aiohttp import web

from gateway.api.answers import json_answer as _json
from gateway.webhooks import MAX_DESCRIPTION, MAX_OVERLAP, Delivery, Endpoint, Webhooks

#: Every route: method, path under the admin prefix, and the ``WebhookApi`` method serving it.
ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/webhooks", "create"),
    ("GET", "/webhooks", "list_endpoints"),
    ("GET", "/webhooks/{webhook}", "get_endpoint"),
    ("PATCH", "/webhooks/{webhook}", "update"),
    ("DELETE", "/webhooks/{webhook}", "delete"),
    ("POST", "/webhooks/{webhook}/rotate", "rotate"),
    ("GET", "/webhooks/{webhook}/deliveries", "deliveries"),
    ("POST", "/webhooks/{webhook}/deliveries/{delivery}/replay", "replay"),
    ("POST", "/webhooks/{webhook}/replay", "replay_failed"),
]

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Events = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=32)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]


class WebhookIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new endpoint: where to POST, and the event types it is sent."""

    url: Url
    """An ``http`` or ``https`` URL whose host is public (loopback, private, link-local and
    unique-local addresses are refused unless the node sets
    ``GATEWAY_WEBHOOKS_ALLOW_PRIVATE=1``)."""
    events: Events
    description: Description = ""


class WebhookPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What to change; what is absent stays."""

    url: Url | None = None
    events: Events | None = None
    description: Description | None = None


class RotateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    overlap_seconds: (
        Annotated[
            float,
            msgspec.Meta(
                ge=0,
                le=MAX_OVERLAP,
                description="How long the secret rotated out keeps signing beside the new one "
                "(default: GATEWAY_WEBHOOKS_ROTATION_OVERLAP_SECONDS, 86400).",
            ),
        ]
        | None
    ) = None


class WebhookOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: str
    merchant: str
    url: str
    events: list[str]
    description: str
    previous_secret_until: str | None
    """Until when the secret rotated out last still signs (ISO 8601), or null."""
    created_at: str
    updated_at: str


class WebhookCreated(WebhookOut, kw_only=True, frozen=True, forbid_unknown_fields=True):
    secret: str
    """The signing secret (``whsec_...``), shown here and by a rotation only."""


class WebhookList(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    webhooks: list[WebhookOut]


class WebhookDeleted(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deleted: str


class Rotated(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: str
    secret: str
    """The new secret; the previous one signs too until ``previous_secret_until``."""
    previous_secret_until: str | None


class DeliveryOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: int
    webhook: str
    event: str
    """The event's id (the body's ``id`` and the ``Loyalty-Event-Id`` header)."""
    type: str
    member: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_at: str
    created_at: str
    last_status: int | None
    last_error: str | None
    last_at: str | None
    delivered_at: str | None


class DeliveryPage(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deliveries: list[DeliveryOut]
    next: int | None
    """The cursor of the next (older) page (``after``), or null at the end."""


class Replayed(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    replayed: int


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def endpoint_out(e: Endpoint) -> WebhookOut:
    return WebhookOut(
        id=e.id,
        merchant=e.merchant,
        url=e.url,
        events=list(e.events),
        description=e.description,
        previous_secret_until=_iso(e.previous_until),
        created_at=e.created_at.isoformat(),
        updated_at=e.updated_at.isoformat(),
    )


def delivery_out(d: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        webhook=d.endpoint,
        event=d.event,
        type=d.type,
        member=d.member,
        state=d.state,  # type: ignore[arg-type]
        attempts=d.attempts,
        next_at=d.next_at.isoformat(),
        created_at=d.created_at.isoformat(),
        last_status=d.last_status,
        last_error=d.last_error,
        last_at=_iso(d.last_at),
        delivered_at=_iso(d.delivered_at),
    )


def _invalid(message: str) -> web.Response:
    return _json({"error": "invalid_field", "message": message}, 400)


def _not_found(what: str = "webhook") -> web.Response:
    return _json({"error": "not_found", "message": f"no such {what}"}, 404)


T = TypeVar("T")


async def _decode(request: web.Request, typ: type[T]) -> T | web.Response:
    try:
        return msgspec.json.decode(await request.read() or b"{}", type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _invalid(str(exc))


class WebhookApi:
    """The routes over ``webhooks``; ``merchant`` is the admin API's check of the path's
    merchant (it raises when the merchant does not exist)."""

    def __init__(
        self, webhooks: Webhooks, merchant: Callable[[web.Request], Awaitable[str]]
    ) -> None:
        self._webhooks = webhooks
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def create(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b = await _decode(request, WebhookIn)
        if isinstance(b, web.Response):
            return b
        e, secret = await self._webhooks.create(merchant, b.url, b.events, b.description)
        out = endpoint_out(e)
        return _json(WebhookCreated(**msgspec.structs.asdict(out), secret=secret), 201)

    async def list_endpoints(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        found = await self._webhooks.endpoints(merchant)
        return _json(WebhookList(webhooks=[endpoint_out(e) for e in found]))

    async def get_endpoint(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        e = await self._webhooks.endpoint(merchant, request.match_info["webhook"])
        return _not_found() if e is None else _json(endpoint_out(e))

    async def update(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b = await _decode(request, WebhookPatch)
        if isinstance(b, web.Response):
            return b
        e = await self._webhooks.update(
            merchant,
            request.match_info["webhook"],
            url=b.url,
            events=b.events,
            description=b.description,
        )
        return _not_found() if e is None else _json(endpoint_out(e))

    async def delete(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        webhook = request.match_info["webhook"]
        if not await self._webhooks.delete(merchant, webhook):
            return _not_found()
        return _json(WebhookDeleted(deleted=webhook))

    async def rotate(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b = await _decode(request, RotateIn)
        if isinstance(b, web.Response):
            return b
        done = await self._webhooks.rotate(
            merchant, request.match_info["webhook"], b.overlap_seconds
        )
        if done is None:
            return _not_found()
        e, secret = done
        return _json(Rotated(id=e.id, secret=secret, previous_secret_until=_iso(e.previous_until)))

    async def deliveries(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        webhook = request.match_info["webhook"]
        q = request.query
        state = q.get("state")
        if state is not None and state not in ("pending", "delivered", "failed"):
            return _invalid("state: pending, delivered or failed")
        try:
            limit = int(q.get("limit", "50"))
            after = int(q.get("after", "0"))
        except ValueError:
            return _invalid("limit and after are integers (after: a cursor)")
        if not 1 <= limit <= 200:
            return _invalid("limit must be within [1, 200]")
        if not 0 <= after < 2**63:
            return _invalid("after: a cursor from the previous page")
        if await self._webhooks.endpoint(merchant, webhook) is None:
            return _not_found()
        page = await self._webhooks.deliveries(merchant, webhook, state, after, limit)
        more = len(page) == limit
        return _json(
            DeliveryPage(
                deliveries=[delivery_out(d) for d in page],
                next=page[-1].id if more else None,
            )
        )

    async def replay(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        try:
            delivery = int(request.match_info["delivery"])
            if not 0 < delivery < 2**63:
                raise ValueError(delivery)
        except ValueError:
            return _not_found("delivery")
        d = await self._webhooks.replay(merchant, request.match_info["webhook"], delivery)
        return _not_found("delivery") if d is None else _json(delivery_out(d))

    async def replay_failed(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        webhook = request.match_info["webhook"]
        if await self._webhooks.endpoint(merchant, webhook) is None:
            return _not_found()
        return _json(Replayed(replayed=await self._webhooks.replay_failed(merchant, webhook)))


__all__ = [
    "ROUTES",
    "DeliveryOut",
    "DeliveryPage",
    "Replayed",
    "RotateIn",
    "Rotated",
    "WebhookApi",
    "WebhookCreated",
    "WebhookDeleted",
    "WebhookIn",
    "WebhookList",
    "WebhookOut",
    "WebhookPatch",
]
