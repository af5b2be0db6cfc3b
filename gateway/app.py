"""A gateway node: builds every component from ``Settings``, owns their lifecycle, and serves
``/ws``, ``/healthz``, ``/readyz`` and ``/metrics``.

Shutdown (SIGTERM) drains: readiness fails at once (``/readyz`` answers 503 while the listener
stays open), new sessions are closed with 3000 and new commands refused with ``draining``,
in-flight commands finish, live sessions are told to reconnect elsewhere with close code 3000,
and only then does aiohttp's own shutdown run; the process exits within ``drain_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import time
from typing import Any

import asyncpg
from aiohttp import web

from gateway import auth
from gateway.api import setup_api
from gateway.auth import Principal
from gateway.background import stop
from gateway.collector import CollectorPolicy
from gateway.fanout.broadcast import LocalBroadcast, handle_admin_broadcast
from gateway.fanout.feeds import Feeds
from gateway.fanout.presence import PresenceBook
from gateway.fanout.publisher import Publisher
from gateway.ledger.engine import Ledger
from gateway.ledger.outbox import OutboxRelay
from gateway.ledger.reads import Reads
from gateway.ledger.sweeper import Sweeper
from gateway.loyalty.commands import expiry_loop, install
from gateway.loyalty.service import Loyalty
from gateway.metrics import Metrics
from gateway.sessions.commands import Dispatcher, Services
from gateway.sessions.handler import websocket
from gateway.sessions.heartbeat import Heartbeat
from gateway.sessions.session import CLOSE_TIMEOUT, FLUSH_TIMEOUT, Session
from gateway.settings import Settings
from gateway.store import db
from gateway.store.keys import CACHE_EPOCH, Keys
from gateway.store.redis import REDIS_ERRORS, CacheEpoch, Redis, cache_risks, create_client
from protocol.codes import CloseCode

log = logging.getLogger(__name__)


class Node:
    """Every long-lived component of one gateway process."""

    def __init__(self, settings: Settings, redis_prefix: str = "lg") -> None:
        self.settings = settings
        self.keys = Keys(redis_prefix)
        self.metrics = Metrics()
        self.sessions: set[Session] = set()
        #: Sessions connected and not yet welcomed (``connected`` .. ``admit`` or ``forget``).
        self.pending = 0
        #: Welcomed sessions per merchant (broadcast targets).
        self.by_merchant: dict[str, set[Session]] = {}
        self.heartbeat = Heartbeat(lambda: self.sessions, settings.session.heartbeat)
        self.collector = CollectorPolicy(
            settings.server.gc_freeze_seconds, settings.server.gc_full_seconds
        )
        self.draining = False
        self.drained = asyncio.Event()
        self.started_at = time.time()
        self.pool: asyncpg.Pool[Any]
        self.redis: Redis
        self.ledger: Ledger
        self.reads: Reads
        self.feeds: Feeds
        self.presence: PresenceBook
        self.broadcast: LocalBroadcast
        self.publisher: Publisher
        self.relay: OutboxRelay
        self.sweeper: Sweeper
        self.dispatcher: Dispatcher
        #: The loyalty programme (commands and admin API); built in ``start``.
        self.loyalty: Loyalty | None = None
        self._expiry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.metrics.watch_gc()
        self.pool = await db.create_pool(
            s.store.database_url, s.store.db_pool_size, s.store.command_timeout
        )
        self.redis = create_client(s.store.redis_url)
        for risk in await cache_risks(self.redis):
            log.warning("Redis configuration: %s", risk)
        epoch = CacheEpoch()  # the cache epoch, shared by the node's cache writers
        with contextlib.suppress(*REDIS_ERRORS):  # else learned from the first write's reply
            epoch.learn(await self.redis.register_script(CACHE_EPOCH)(keys=[self.keys.epoch()]))
        self.reads = Reads(self.pool, self.redis, self.keys, epoch)
        self.publisher = Publisher(self.redis, self.keys, epoch=epoch)
        self.relay = OutboxRelay(
            self.pool, self.publisher, s.ledger.relay_interval, s.ledger.relay_min_age
        )
        self.publisher.on_published = self.relay.mark_published
        self.ledger = Ledger(s.store.database_url, s.ledger, self.publisher)
        self.ledger.on_batch_timed = self.metrics.ledger_batch
        self.reads.version_floor = self.ledger.known_version
        await self.ledger.start()
        self.feeds = Feeds(self.redis, self.keys, self.reads, s.session.max_recovery)
        self.ledger.on_committed = self.feeds.deliver_committed
        self.presence = PresenceBook(
            self.redis,
            self.keys,
            s.server.node_id,
            limit=s.session.max_sessions_per_member,
            interval=s.session.heartbeat,
            ttl=3 * s.session.heartbeat,
        )
        self.feeds.presence_reader = self.presence.online
        self.broadcast = LocalBroadcast(self.keys, self._merchant_sessions, self.redis)
        self.feeds.broadcast_handlers.append(self.broadcast.deliver)
        self.feeds.reconnect_handlers.append(self.broadcast.replay)
        await self.feeds.start()
        self.presence.start(self._member_sessions, self.feeds.presence_watched)
        self.sweeper = Sweeper(self.pool, self.ledger, s.ledger.sweep_interval)
        self.dispatcher = Dispatcher(
            Services(
                ledger=self.ledger,
                reads=self.reads,
                feeds=self.feeds,
                max_subscriptions=s.session.max_subscriptions,
                verify=functools.partial(
                    auth.verify, s.auth.jwt_secret, leeway=s.auth.leeway, keys=s.auth.merchant_keys
                ),
            )
        )
        self.loyalty = install(self)
        await self.loyalty.events.start()
        self._expiry = asyncio.create_task(expiry_loop(self.loyalty), name="points-expiry")
        self.relay.start()
        self.sweeper.start()
        self.heartbeat.start()
        self.collector.start()

    async def drain(self) -> None:
        """Fail readiness, finish in-flight commands, close sessions with 3000.

        Budget: half of ``drain_seconds`` for in-flight commands (new ones are refused with
        ``draining`` meanwhile), then the close handshakes, all within 80% of it so the rest
        of the shutdown fits too."""
        if self.draining:
            await self.drained.wait()
            return
        self.draining = True
        self.metrics.ready.set(0)
        budget = self.settings.server.drain_seconds
        start = time.monotonic()
        sessions = list(self.sessions)
        inflight = [t for s in sessions for t in s.inflight]
        # Let load balancers see the failed readiness before sessions reconnect elsewhere.
        grace = asyncio.create_task(asyncio.sleep(min(1.0, budget * 0.1)))
        await asyncio.wait([grace, *inflight], timeout=max(0.05, budget * 0.5))
        grace.cancel()
        sessions = list(self.sessions)
        # Commands still running reply before their session's close frame, within what is
        # left of the budget once the flush and the close handshake are set aside.
        left = budget * 0.8 - (time.monotonic() - start)
        reply_grace = max(0.0, left - CLOSE_TIMEOUT - 1.0 - FLUSH_TIMEOUT)
        for s in sessions:
            s.close_soon(
                CloseCode.DRAINING, "node draining: reconnect to another node", reply_grace
            )
        closing = [t for s in sessions for t in s.inflight]
        left = budget * 0.8 - (time.monotonic() - start)
        if closing:
            await asyncio.wait(closing, timeout=max(0.05, left))
        log.info("drained %d sessions in %.2f s", len(sessions), time.monotonic() - start)
        self.drained.set()

    def install_sigterm(self) -> None:
        """Take over SIGTERM from aiohttp's runner (if it installed one): drain first, while
        the listener stays open to answer ``/readyz`` with 503, then let aiohttp shut down."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
            return  # not run by web.run_app (e.g. embedded in tests): leave signals alone
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:
            if not self.draining:
                task = loop.create_task(self._drain_then_exit())
                self._background = task

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    async def _drain_then_exit(self) -> None:
        log.warning("SIGTERM: draining %d sessions", len(self.sessions))
        try:
            await self.drain()
        finally:
            asyncio.get_running_loop().call_soon(_graceful_exit)

    async def close(self) -> None:
        self.metrics.unwatch_gc()
        await self.collector.close()
        await self.heartbeat.close()
        await stop(self._expiry)
        if self.loyalty is not None:
            with contextlib.suppress(Exception):
                await self.loyalty.events.close()
        if hasattr(self, "presence"):
            with contextlib.suppress(Exception):
                await self.presence.close()
        if getattr(self, "ledger", None) is not None:
            self.ledger.on_committed = None  # a batch still finishing finds the feeds closed
        for component in ("broadcast", "sweeper", "relay", "feeds", "ledger"):
            obj = getattr(self, component, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    await obj.close()
        if hasattr(self, "redis"):
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if hasattr(self, "pool"):
            try:
                await asyncio.wait_for(self.pool.close(), 2)
            except asyncio.CancelledError:
                self.pool.terminate()
                raise
            except Exception:  # a server that does not answer: do not wait on its goodbyes
                self.pool.terminate()

    # ---------------------------------------------------------------- session indexes
    def connected(self, session: Session) -> None:
        """A new connection: held, and counted as pending until it is welcomed."""
        self.sessions.add(session)
        self.pending += 1

    def admit(self, session: Session) -> None:
        """A welcomed session: no longer pending; indexed by merchant (broadcast)."""
        p = session.principal
        assert p is not None
        self.pending -= 1
        self.by_merchant.setdefault(p.merchant, set()).add(session)

    def forget(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        p = session.principal
        if p is None:
            self.pending -= 1  # never welcomed
            return
        group = self.by_merchant.get(p.merchant)
        if group is not None:
            group.discard(session)
            if not group:
                del self.by_merchant[p.merchant]
        if p.kind == "app" and p.member is not None:
            self.presence.leave(session.id, p)

    def _merchant_sessions(self, merchant: str) -> set[Session]:
        return self.by_merchant.get(merchant) or set()

    def _member_sessions(self) -> list[tuple[str, Principal]]:
        return [
            (s.id, s.principal)
            for s in self.sessions
            if s.principal is not None
            and s.principal.kind == "app"
            and s.principal.member is not None
            and not s.closing
        ]

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


def _graceful_exit() -> None:
    raise web.GracefulExit()


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
    m.ledger_shed.set(node.ledger.stats.shed)
    m.gc_reclaimed.set(node.collector.reclaimed)
    return web.Response(body=m.render(), content_type="text/plain")


async def admin_broadcast(request: web.Request) -> web.Response:
    """``POST /admin/broadcast`` (``Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`` or the
    merchant's own admin token), body
    ``{"merchant": ..., "kind": "offer", "payload": {...}}``: a ``notice`` to every session of
    the merchant on every node."""
    node: Node = request.app[NODE]
    return await handle_admin_broadcast(
        request,
        node.redis,
        node.keys,
        node.settings.auth.admin_token,
        node.settings.auth.merchant_keys,
    )


def build_app(settings: Settings, redis_prefix: str = "lg") -> web.Application:
    app = web.Application()
    node = Node(settings, redis_prefix)
    app[NODE] = node
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/broadcast", admin_broadcast)

    async def lifecycle(app: web.Application) -> Any:
        await node.start()
        node.install_sigterm()
        yield
        await node.drain()
        await node.close()

    app.cleanup_ctx.append(lifecycle)
    setup_api(app, node)

    async def on_shutdown(app: web.Application) -> None:
        await node.drain()

    app.on_shutdown.append(on_shutdown)
    return app
