"""The delivery worker, one on every node: it claims due deliveries, POSTs them signed, and
records what each answer means (delivered, retried later, failed).

- Claims are short transactions (``FOR UPDATE SKIP LOCKED``, so the nodes share the work and
  never claim the same delivery at once) that lease what they take: ``next_at`` moves past the
  attempt's timeout, so a node that dies mid-attempt leaves the delivery due again after that
  (at-least-once: the receiver deduplicates by the event id).
- Order per member per endpoint: only the oldest pending delivery of an (endpoint, member) may
  be claimed; the next one waits until it is delivered or has failed for good.
- A slow or failing endpoint holds at most ``concurrency`` attempts of this node (each bounded
  by ``timeout``): a claim takes no more of an endpoint's deliveries than it has free slots, so
  the other endpoints' deliveries go on, and the ledger never waits on any of it.
- Outcomes are written in batches; a write that fails is retried (the lease covers the gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import msgspec
import orjson

from gateway.background import stop
from gateway.settings import WebhookSettings
from gateway.store.db import TRANSIENT_ERRORS, new_pool, open_pool
from gateway.webhooks.signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, HEADER, signature
from gateway.webhooks.urls import GuardedResolver, literal_refused

log = logging.getLogger(__name__)

#: Seconds a claimed delivery's lease lasts beyond the attempt's timeout (the time from its
#: claim to its POST, and from the answer to its outcome written), both on the database's clock.
LEASE_MARGIN = 1.0
#: Connections of the worker's pool: a claim and an outcome write at once.
POOL_SIZE = 2
#: Every statement of the worker finds its rows by key, but its CTEs' row estimates are the
#: planner's guesses (133,980 claimed rows for 16): it joined them to every delivery and
#: event by hash, a sequential scan of both tables per claim (58 ms at 20,000 deliveries,
#: 2026-12-07). As on the ledger's lanes (``gateway/ledger/queries.py``), no sequential scan,
#: hash or merge join; and no JIT, which compiled the claim for 8 to 18 ms each time (its
#: plan looks costly: a subquery per endpoint) to run a statement of 0.4 ms.
PLAN_SETTINGS = {
    "jit": "off",
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
}
#: Bytes of an answer read (and thrown away) so its connection can be reused.
MAX_ANSWER = 65_536

# Per endpoint (a lateral subquery each: the endpoints are few, and one without due deliveries
# costs one index probe), its oldest due heads, as many as it has free slots on this node: a
# head is the oldest pending delivery of its (endpoint, member). One statement over every
# endpoint, so a claim round is one round trip whatever their number.
_CLAIM = """
WITH picked AS (
  SELECT c.id
    FROM webhook_endpoints w
   CROSS JOIN LATERAL (
     SELECT d.id FROM webhook_deliveries d
      WHERE d.endpoint_id = w.id AND d.state = 'pending' AND d.next_at <= clock_timestamp()
        AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                         WHERE p.member_id = d.member_id AND p.endpoint_id = d.endpoint_id
                           AND p.state = 'pending' AND p.id < d.id
                        OFFSET 0)
      ORDER BY d.next_at
      LIMIT greatest(coalesce(($1::jsonb ->> w.id)::int, $2), 0)
        FOR UPDATE OF d SKIP LOCKED) c
),
claimed AS (
  UPDATE webhook_deliveries d
     SET next_at = clock_timestamp() + make_interval(secs => $3), attempts = d.attempts + 1,
         first_at = coalesce(d.first_at, clock_timestamp())
    FROM picked WHERE d.id = picked.id
  RETURNING d.id, d.endpoint_id, d.event_id, d.attempts
)
SELECT c.id, c.endpoint_id, c.attempts, ev.id::text AS event_id, ev.type, ev.merchant_id,
       ev.member_id, ev.data::text AS data, ev.created_at, w.url, w.secret,
       CASE WHEN w.previous_until > clock_timestamp() THEN w.previous_secret END AS previous
  FROM claimed c
  JOIN webhook_events ev ON ev.id = c.event_id
  JOIN webhook_endpoints w ON w.id = c.endpoint_id
 ORDER BY c.id
"""

# An outcome is written only while the delivery is still the attempt's (same attempt count,
# still pending): an attempt that outlived its lease, whose delivery was claimed again, or
# that was replayed or deleted meanwhile, changes nothing.
_RECORD = """
UPDATE webhook_deliveries d
   SET state = CASE WHEN r.ok THEN 'delivered'
                    WHEN d.first_at + make_interval(secs => $7) < clock_timestamp()
                                      + make_interval(secs => r.delay) THEN 'failed'
                    ELSE 'pending' END,
       next_at = CASE WHEN r.ok THEN d.next_at
                      ELSE clock_timestamp() + make_interval(secs => r.delay) END,
       delivered_at = CASE WHEN r.ok THEN clock_timestamp() END,
       last_status = r.status, last_error = r.error, last_at = clock_timestamp()
  FROM unnest($1::int8[], $2::int4[], $3::bool[], $4::int4[], $5::text[], $6::float8[])
       AS r(id, attempts, ok, status, error, delay)
 WHERE d.id = r.id AND d.attempts = r.attempts AND d.state = 'pending'
RETURNING r.ok AND EXISTS (SELECT 1 FROM webhook_deliveries n
                            WHERE n.member_id = d.member_id AND n.endpoint_id = d.endpoint_id
                              AND n.state = 'pending' AND n.id > d.id OFFSET 0) AS next
"""


#: What is kept: a delivered delivery for ``RETENTION_DAYS`` after its delivery, an event while
#: any delivery of it is left; failed deliveries until they are replayed and delivered (or
#: their endpoint is deleted). Pruned by every node's worker, a batch at a time.
RETENTION_DAYS = 7
PRUNE_SECONDS = 300.0
_PRUNE_DELIVERIES = """
DELETE FROM webhook_deliveries
 WHERE id IN (SELECT id FROM webhook_deliveries
               WHERE state = 'delivered'
                 AND delivered_at < clock_timestamp() - make_interval(days => $1)
               LIMIT 5000
                 FOR UPDATE SKIP LOCKED)
"""
#: Events past the retention with no delivery left (all delivered and pruned, or their
#: endpoints deleted).
_PRUNE_EVENTS = """
DELETE FROM webhook_events
 WHERE id IN (SELECT ev.id FROM webhook_events ev
               WHERE ev.created_at < clock_timestamp() - make_interval(days => $1)
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id)
               LIMIT 5000)
"""


class Envelope(msgspec.Struct, frozen=True):
    """The body of every delivery."""

    id: str
    type: str
    created_at: str
    merchant: str
    member: str
    data: msgspec.Raw


def body_of(row: Any) -> bytes:
    created: datetime = row["created_at"]
    return msgspec.json.encode(
        Envelope(
            id=row["event_id"],
            type=row["type"],
            created_at=created.isoformat(),
            merchant=row["merchant_id"],
            member=row["member_id"],
            data=msgspec.Raw(row["data"].encode()),
        )
    )


def backoff(settings: WebhookSettings, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (jittered by 20%)."""
    base: float = min(settings.backoff * 2.0 ** min(attempts - 1, 40), settings.backoff_max)
    return base * random.uniform(0.8, 1.2)


class Deliverer:
    """This node's delivery worker (``start``/``close``); ``run_once`` is one claim round."""

    def __init__(self, dsn: str, settings: WebhookSettings, command_timeout: float = 5.0) -> None:
        #: Its own connections: its claims and outcomes never wait for the node's pool, nor
        #: the node's reads for them. Their plans are the lanes' (``PLAN_SETTINGS``).
        self._pool: asyncpg.Pool[Any] = new_pool(
            dsn, POOL_SIZE, command_timeout, settings=PLAN_SETTINGS
        )
        self._settings = settings
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._inflight: dict[str, int] = {}
        self._results: list[tuple[int, int, bool, int | None, str | None, float]] = []
        self._wake = asyncio.Event()
        #: Endpoints whose last claim took all the slots they had free: more of theirs may be
        #: due, so a slot they free is worth a claim at once.
        self._saturated: set[str] = set()
        #: Counters for tests and the bench.
        self.delivered = 0
        self.failed_attempts = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            s = self._settings
            # No connector limit: the claims bound the POSTs per endpoint; one per host would
            # let a slow endpoint hold the connections of another on the same host.
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                resolver=None if s.allow_private else GuardedResolver(),
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=s.timeout),
                headers={"User-Agent": "loyalty-gateway-webhooks/1"},
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._http

    async def start(self) -> None:
        if self._settings.poll_seconds > 0:
            await open_pool(self._pool)
            self._task = asyncio.create_task(self._run(), name="webhooks-deliverer")

    async def close(self) -> None:
        await stop(self._task)
        for task in list(self._attempts):
            task.cancel()  # its delivery stays leased, then due again: sent again elsewhere
        await asyncio.gather(*self._attempts, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._flush()
        if self._http is not None:
            await self._http.close()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 2)
            except Exception:
                self._pool.terminate()

    async def run_once(self) -> int:
        """Claim what is due and start its attempts; how many were claimed."""
        s = self._settings
        quota = {e: s.concurrency - n for e, n in self._inflight.items() if n > 0}
        rows = await self._pool.fetch(
            _CLAIM, orjson.dumps(quota).decode(), s.concurrency, 2 * s.timeout + LEASE_MARGIN
        )
        taken: dict[str, int] = {}
        for row in rows:
            endpoint = row["endpoint_id"]
            taken[endpoint] = taken.get(endpoint, 0) + 1
            self._inflight[endpoint] = self._inflight.get(endpoint, 0) + 1
            task = asyncio.create_task(self._attempt(row))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        self._saturated = {e for e, n in taken.items() if n >= quota.get(e, s.concurrency)}
        return len(rows)

    async def prune(self) -> None:
        """Delete deliveries delivered ``RETENTION_DAYS`` ago and their events."""
        await self._pool.execute(_PRUNE_DELIVERIES, RETENTION_DAYS)
        await self._pool.execute(_PRUNE_EVENTS, RETENTION_DAYS)

    async def _run(self) -> None:
        poll = self._settings.poll_seconds
        pruned = time.monotonic()
        while True:
            if time.monotonic() - pruned > PRUNE_SECONDS:
                pruned = time.monotonic()
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await self.prune()
            try:
                await self.run_once()
            except TRANSIENT_ERRORS:
                log.warning("webhook claim failed; will retry", exc_info=True)
            except Exception:
                log.exception("webhook claim failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # a free slot of a saturated endpoint, or outcomes written (each frees its
                # member's next delivery): look again at once, after the attempts that end
                # together have; else after ``poll``
                await asyncio.wait_for(self._wake.wait(), poll)
                await asyncio.sleep(0.002)

    async def _attempt(self, row: Any) -> None:
        s = self._settings
        endpoint, url = row["endpoint_id"], row["url"]
        status: int | None = None
        error: str | None = None
        try:
            if not s.allow_private and literal_refused(url):
                raise OSError("the URL's address is not public (refused)")
            body = body_of(row)
            keys = [row["secret"]] if row["previous"] is None else [row["secret"], row["previous"]]
            headers = {
                "Content-Type": "application/json",
                HEADER: signature(keys, int(time.time()), body),
                EVENT_ID_HEADER: row["event_id"],
                EVENT_TYPE_HEADER: row["type"],
            }
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.content.read(MAX_ANSWER)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"timeout ({s.timeout:g} s)"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            cause = getattr(exc, "os_error", None)  # a connector error's own reason
            error = f"{type(exc).__name__}: {exc}" + (f" ({cause})" if cause else "")
            error = error[:300]
        finally:
            self._inflight[endpoint] -= 1
            if not self._inflight[endpoint]:
                del self._inflight[endpoint]
            if endpoint in self._saturated:
                self._wake.set()  # a free slot of an endpoint with more due: claim it now
        ok = error is None
        if ok:
            self.delivered += 1
        else:
            self.failed_attempts += 1
        delay = 0.0 if ok else backoff(s, row["attempts"])
        self._results.append((row["id"], row["attempts"], ok, status, error, delay))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            while self._results:
                try:
                    if await self._flush():
                        self._wake.set()  # a member's next delivery is free to go
                except TRANSIENT_ERRORS:
                    log.warning("recording webhook outcomes failed; will retry", exc_info=True)
                    await asyncio.sleep(1.0)
        finally:
            self._flushing = None

    async def _flush(self) -> bool:
        """Write the outcomes; whether one freed a member's next delivery."""
        results, self._results = self._results, []
        if not results:
            return False
        try:
            cols = list(zip(*results, strict=True))
            rows = await self._pool.fetch(_RECORD, *cols, self._settings.retry_seconds)
        except BaseException:
            self._results[:0] = results
            raise
        return any(r["next"] for r in rows)
