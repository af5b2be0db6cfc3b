"""A gateway node: builds every component from ``Settings``, owns their lifecycle, and serves
``/ws``, ``/healthz``, ``/readyz`` and ``/metrics``.

Shutdown (SIGTERM) drains: readiness fails at once, new sessions are refused, live sessions are
told to reconnect elsewhere with close code 3000 after their in-flight commands finish, and the
process exits within ``drain_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

import asyncpg
from aiohttp import web

from gateway.auth import Principal
from gateway.fanout.feeds import Feeds
from gateway.fanout.publisher import Publisher
from gateway.ledger.engine import Ledger
from gateway.ledger.outbox import OutboxRelay
from gateway.ledger.reads import Reads
from gateway.ledger.sweeper import Sweeper
from gateway.loyalty.earning import Earning
from gateway.metrics import Metrics
from gateway.sessions.commands import Dispatcher, Services
from gateway.sessions.handler import websocket
from gateway.sessions.session import Session
from gateway.settings import Settings
from gateway.store import db
from gateway.store.keys import Keys
from gateway.store.redis import Redis, create_client
from protocol.codes import CloseCode

log = logging.getLogger(__name__)


class Node:
    """Every long-lived component of one gateway process."""

    def __init__(self, settings: Settings, redis_prefix: str = "lg") -> None:
        self.settings = settings
        self.keys = Keys(redis_prefix)
        self.metrics = Metrics()
        self.sessions: set[Session] = set()
        self.member_sessions: Counter[str] = Counter()
        self.draining = False
        self.started_at = time.time()
        self.pool: asyncpg.Pool[Any]
        self.redis: Redis
        self.ledger: Ledger
        self.reads: Reads
        self.feeds: Feeds
        self.publisher: Publisher
        self.relay: OutboxRelay
        self.sweeper: Sweeper
        self.dispatcher: Dispatcher

    async def start(self) -> None:
        s = self.settings
        self.pool = await db.create_pool(
            s.store.database_url, s.store.db_pool_size, s.store.command_timeout
        )
        self.redis = create_client(s.store.redis_url)
        self.reads = Reads(self.pool, self.redis, self.keys)
        self.publisher = Publisher(self.redis, self.keys)
        self.relay = OutboxRelay(
            self.pool, self.publisher, s.ledger.relay_interval, s.ledger.relay_min_age
        )
        self.publisher.on_published = self.relay.mark_published
        self.ledger = Ledger(s.store.database_url, s.ledger, self.publisher)
        await self.ledger.start()
        self.feeds = Feeds(self.redis, self.keys, self.reads, s.session.max_recovery)
        await self.feeds.start()
        self.sweeper = Sweeper(self.pool, self.ledger, s.ledger.sweep_interval)
        self.dispatcher = Dispatcher(
            Services(
                ledger=self.ledger,
                reads=self.reads,
                feeds=self.feeds,
                earning=Earning(self.pool),
                max_subscriptions=s.session.max_subscriptions,
            )
        )
        self.relay.start()
        self.sweeper.start()

    async def drain(self) -> None:
        """Fail readiness, finish in-flight commands, close sessions with 3000."""
        if self.draining:
            return
        self.draining = True
        deadline = self.settings.server.drain_seconds
        sessions = list(self.sessions)
        inflight = [t for s in sessions for t in s.inflight]
        if inflight:
            await asyncio.wait(inflight, timeout=max(0.1, deadline * 0.5))
        for s in sessions:
            s.close_soon(CloseCode.DRAINING, "node draining: reconnect to another node")
        closing = [t for s in sessions for t in s.inflight]
        if closing:
            await asyncio.wait(closing, timeout=max(0.1, deadline * 0.4))

    async def close(self) -> None:
        for component in ("sweeper", "relay", "feeds", "ledger"):
            obj = getattr(self, component, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    await obj.close()
        if hasattr(self, "redis"):
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if hasattr(self, "pool"):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)

    # ---------------------------------------------------------------- presence (local)
    def presence_join(self, session: Session, principal: Principal) -> bool:
        member = principal.member
        assert member is not None
        if self.member_sessions[member] >= self.settings.session.max_sessions_per_member:
            return False
        self.member_sessions[member] += 1
        return True

    def presence_leave(self, session: Session) -> None:
        p = session.principal
        if p is not None and p.kind == "app" and p.member is not None:
            self.member_sessions[p.member] -= 1
            if self.member_sessions[p.member] <= 0:
                del self.member_sessions[p.member]

    # ---------------------------------------------------------------- ops endpoints
    async def ready(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        if self.draining:
            checks["node"] = "draining"
        try:
            async with asyncio.timeout(1.0):
                await self.pool.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"down: {type(exc).__name__}"
        try:
            async with asyncio.timeout(1.0):
                await self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"down: {type(exc).__name__}"
        ok = not self.draining and checks["postgres"] == "ok" and checks["redis"] == "ok"
        return ok, checks


NODE: web.AppKey[Node] = web.AppKey("node", Node)


async def healthz(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    return web.json_response(
        {"status": "ok", "node": node.settings.server.node_id, "sessions": len(node.sessions)}
    )


async def readyz(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    ok, checks = await node.ready()
    node.metrics.ready.set(1 if ok else 0)
    return web.json_response({"ready": ok, **checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    node: Node = request.app[NODE]
    m = node.metrics
    m.sessions.set(len(node.sessions))
    m.feeds.set(len(node.feeds))
    m.outbox.set(node.relay.pending)
    m.batches.set(node.ledger.stats.batches)
    m.ledger_ops.set(node.ledger.stats.ops)
    return web.Response(body=m.render(), content_type="text/plain")


def build_app(settings: Settings, redis_prefix: str = "lg") -> web.Application:
    app = web.Application()
    node = Node(settings, redis_prefix)
    app[NODE] = node
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def lifecycle(app: web.Application) -> Any:
        await node.start()
        yield
        await node.drain()
        await node.close()

    app.cleanup_ctx.append(lifecycle)

    async def on_shutdown(app: web.Application) -> None:
        await node.drain()

    app.on_shutdown.append(on_shutdown)
    return app
