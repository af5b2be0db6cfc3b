"""A merchant's endpoints (table webhook_endpoints) and what the admin API asks of their
deliveries: the failed ones, listed and replayed. Every statement is scoped by the merchant:
another merchant's endpoint or delivery is one that does not exist."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.errors import GatewayError
from gateway.settings import WebhookSettings
from gateway.store.db import translate_errors
from gateway.webhooks.signing import new_secret
from gateway.webhooks.tap import EVENT_TYPES
from gateway.webhooks.urls import UrlRefused, check_url
from protocol.codes import ErrorCode

#: Endpoints one merchant may have.
MAX_ENDPOINTS = 16
MAX_DESCRIPTION = 200
#: A rotation's overlap may be asked for up to this many seconds (7 days).
MAX_OVERLAP = 604_800.0

_ENDPOINT_COLUMNS = """id, merchant_id, url, events, description, previous_until, created_at,
       updated_at"""
_DELIVERY_COLUMNS = """d.id, d.endpoint_id, d.event_id, ev.type, d.member_id, d.state,
       d.attempts, d.next_at, d.created_at, d.last_status, d.last_error, d.last_at,
       d.delivered_at"""


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    merchant: str
    url: str
    events: tuple[str, ...]
    description: str
    #: Until when the secret rotated out last still signs (None: no overlap running).
    previous_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    endpoint: str
    event: str
    type: str
    member: str
    state: str
    attempts: int
    next_at: datetime
    created_at: datetime
    last_status: int | None
    last_error: str | None
    last_at: datetime | None
    delivered_at: datetime | None


def _endpoint(r: Any) -> Endpoint:
    return Endpoint(
        r["id"],
        r["merchant_id"],
        r["url"],
        tuple(r["events"]),
        r["description"],
        r["previous_until"],
        r["created_at"],
        r["updated_at"],
    )


def _delivery(r: Any) -> Delivery:
    return Delivery(
        r["id"],
        r["endpoint_id"],
        str(r["event_id"]),
        r["type"],
        r["member_id"],
        r["state"],
        r["attempts"],
        r["next_at"],
        r["created_at"],
        r["last_status"],
        r["last_error"],
        r["last_at"],
        r["delivered_at"],
    )


def _invalid(message: str) -> GatewayError:
    return GatewayError(message, ErrorCode.INVALID_FIELD)


def check_events(events: Sequence[str]) -> list[str]:
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise _invalid(f"events: unknown type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})")
    if not events:
        raise _invalid("events: at least one event type")
    return sorted(set(events))


class Webhooks:
    """The endpoints of each merchant and their deliveries, for the admin API."""

    def __init__(self, pool: asyncpg.Pool[Any], settings: WebhookSettings) -> None:
        self._pool = pool
        self._settings = settings

    async def _check(self, url: str | None, description: str | None) -> None:
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise _invalid(f"description: at most {MAX_DESCRIPTION} characters")
        if url is not None:
            try:
                await check_url(url, self._settings.allow_private)
            except UrlRefused as exc:
                raise _invalid(str(exc)) from None

    async def create(
        self, merchant: str, url: str, events: Sequence[str], description: str = ""
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its signing secret (shown this once)."""
        kinds = check_events(events)
        await self._check(url, description)
        secret = new_secret()
        with translate_errors("webhook endpoint write"):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "wh:" + merchant)
                count = await conn.fetchval(
                    "SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1", merchant
                )
                if count >= MAX_ENDPOINTS:
                    raise _invalid(f"a merchant has at most {MAX_ENDPOINTS} webhook endpoints")
                row = await conn.fetchrow(
                    f"""INSERT INTO webhook_endpoints (id, merchant_id, url, events, description,
                                                       secret)
                        VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}""",
                    "we_" + secrets.token_hex(8),
                    merchant,
                    url,
                    kinds,
                    description,
                    secret,
                )
        return _endpoint(row), secret

    async def endpoints(self, merchant: str) -> list[Endpoint]:
        with translate_errors("webhook endpoints read"):
            rows = await self._pool.fetch(
                f"""SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1
                     ORDER BY created_at, id""",
                merchant,
            )
        return [_endpoint(r) for r in rows]

    async def endpoint(self, merchant: str, endpoint: str) -> Endpoint | None:
        with translate_errors("webhook endpoint read"):
            row = await self._pool.fetchrow(
                f"""SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints
                     WHERE merchant_id = $1 AND id = $2""",
                merchant,
                endpoint,
            )
        return None if row is None else _endpoint(row)

    async def update(
        self,
        merchant: str,
        endpoint: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Endpoint | None:
        """Change what is given; deliveries already written keep going to the endpoint (to its
        new URL), new events follow the new subscription."""
        kinds = None if events is None else check_events(events)
        await self._check(url, description)
        with translate_errors("webhook endpoint write"):
            row = await self._pool.fetchrow(
                f"""UPDATE webhook_endpoints
                       SET url = coalesce($3, url), events = coalesce($4, events),
                           description = coalesce($5, description), updated_at = now()
                     WHERE merchant_id = $1 AND id = $2 RETURNING {_ENDPOINT_COLUMNS}""",
                merchant,
                endpoint,
                url,
                kinds,
                description,
            )
        return None if row is None else _endpoint(row)

    async def delete(self, merchant: str, endpoint: str) -> bool:
        """Remove the endpoint and its deliveries (nothing more is sent to it)."""
        with translate_errors("webhook endpoint write"):
            async with self._pool.acquire() as conn, conn.transaction():
                found = await conn.fetchval(
                    "DELETE FROM webhook_endpoints WHERE merchant_id = $1 AND id = $2 RETURNING 1",
                    merchant,
                    endpoint,
                )
                if found:
                    await conn.execute(
                        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1", endpoint
                    )
        return bool(found)

    async def rotate(
        self, merchant: str, endpoint: str, overlap: float | None = None
    ) -> tuple[Endpoint, str] | None:
        """A new secret; the current one keeps signing beside it for ``overlap`` seconds (the
        node's default when None; 0: it stops at once). A secret rotated out earlier and still
        in its overlap stops now: two secrets sign at most."""
        seconds = self._settings.rotation_overlap if overlap is None else overlap
        if not 0 <= seconds <= MAX_OVERLAP:
            raise _invalid(f"overlap_seconds: within [0, {int(MAX_OVERLAP)}]")
        secret = new_secret()
        with translate_errors("webhook endpoint write"):
            row = await self._pool.fetchrow(
                f"""UPDATE webhook_endpoints
                       SET previous_secret = CASE WHEN $4 > 0 THEN secret END,
                           previous_until = CASE WHEN $4 > 0
                                                 THEN now() + make_interval(secs => $4) END,
                           secret = $3, updated_at = now()
                     WHERE merchant_id = $1 AND id = $2 RETURNING {_ENDPOINT_COLUMNS}""",
                merchant,
                endpoint,
                secret,
                float(seconds),
            )
        return None if row is None else (_endpoint(row), secret)

    async def deliveries(
        self, merchant: str, endpoint: str, state: str | None, after: int, limit: int
    ) -> list[Delivery]:
        """The endpoint's deliveries (in ``state`` if given), newest first, older than the
        cursor ``after`` (a delivery id; 0: from the newest)."""
        with translate_errors("webhook deliveries read"):
            rows = await self._pool.fetch(
                f"""SELECT {_DELIVERY_COLUMNS}
                      FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id
                     WHERE d.merchant_id = $1 AND d.endpoint_id = $2
                       AND ($3::text IS NULL OR d.state = $3)
                       AND ($4 = 0 OR d.id < $4)
                     ORDER BY d.id DESC LIMIT $5""",
                merchant,
                endpoint,
                state,
                after,
                limit,
            )
        return [_delivery(r) for r in rows]

    async def replay(self, merchant: str, endpoint: str, delivery: int) -> Delivery | None:
        """Send a failed (or delivered) delivery again, with its event id: due now, its retry
        period anew. A pending one is left as it is."""
        with translate_errors("webhook delivery write"):
            row = await self._pool.fetchrow(
                f"""WITH d AS (
                      UPDATE webhook_deliveries
                         SET state = 'pending', attempts = 0, next_at = clock_timestamp(),
                             first_at = NULL, delivered_at = NULL
                       WHERE merchant_id = $1 AND endpoint_id = $2 AND id = $3
                         AND state <> 'pending'
                      RETURNING *)
                    SELECT {_DELIVERY_COLUMNS}
                      FROM d JOIN webhook_events ev ON ev.id = d.event_id""",
                merchant,
                endpoint,
                delivery,
            )
            if row is None:
                row = await self._pool.fetchrow(
                    f"""SELECT {_DELIVERY_COLUMNS}
                          FROM webhook_deliveries d JOIN webhook_events ev ON ev.id = d.event_id
                         WHERE d.merchant_id = $1 AND d.endpoint_id = $2 AND d.id = $3""",
                    merchant,
                    endpoint,
                    delivery,
                )
        return None if row is None else _delivery(row)

    async def replay_failed(self, merchant: str, endpoint: str) -> int:
        """Send every failed delivery of the endpoint again; how many."""
        with translate_errors("webhook delivery write"):
            status = await self._pool.execute(
                """UPDATE webhook_deliveries
                      SET state = 'pending', attempts = 0, next_at = clock_timestamp(),
                          first_at = NULL
                    WHERE merchant_id = $1 AND endpoint_id = $2 AND state = 'failed'""",
                merchant,
                endpoint,
            )
        return int(status.rsplit(" ", 1)[-1])
