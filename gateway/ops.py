"""The operator's endpoints of a node: ``/healthz`` (the process answers), ``/readyz`` (it can
serve: not draining, PostgreSQL answers) and ``/metrics`` (Prometheus text).

Readiness does not follow Redis: Redis holds only rebuildable state (the balance cache, fan-out,
presence), a command reads PostgreSQL when it is away, and every node shares the one Redis, so
failing readiness for it would take every node out of the load balancer at once. Its health is
``gateway_redis_up`` and the ``GatewayRedisDown`` alert instead. Both gauges are kept by the
node itself, every ``HEALTH_SECONDS``, not only when someone asks ``/readyz``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from gateway import logs
from gateway.background import stop
from gateway.metrics import Metrics
from gateway.store.redis import Redis

log = logging.getLogger(__name__)

#: Seconds between the node's own readiness checks (the gauges' freshness; a Prometheus scrape
#: is every 15 s or more).
HEALTH_SECONDS = 5.0


class Readiness:
    """Whether this node can serve now; the one owner of the answer (and of its gauge)."""

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        redis: Redis,
        draining: Callable[[], bool],
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._draining = draining
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="readiness")

    async def close(self) -> None:
        await stop(self._task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the checks catch their stores' errors; anything else is logged
                log.exception("readiness check failed")
            await asyncio.sleep(HEALTH_SECONDS)

    async def check(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        draining = self._draining()
        if draining:
            checks["node"] = "draining"
        try:
            async with asyncio.timeout(1.0):
                await self._pool.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"down: {type(exc).__name__}"
        try:
            async with asyncio.timeout(1.0):
                await self._redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"down: {type(exc).__name__}"
        ok = not draining and checks["postgres"] == "ok"
        self._metrics.ready.set(1 if ok else 0)
        self._metrics.redis_up.set(1 if checks["redis"] == "ok" else 0)
        return ok, checks

    def draining(self) -> None:
        """The node began to drain: not ready from now on."""
        self._metrics.ready.set(0)


class Ops:
    """The handlers, over what they report: the node's name and session count, readiness,
    and the metrics with a refresh of the gauges read at scrape time."""

    def __init__(
        self,
        node_id: str,
        sessions: Callable[[], int],
        readiness: Readiness,
        metrics: Metrics,
        refresh: Callable[[], None],
    ) -> None:
        self._node_id = node_id
        self._sessions = sessions
        self._readiness = readiness
        self._metrics = metrics
        self._refresh = refresh

    def setup(self, app: web.Application) -> None:
        app.middlewares.append(access_log)  # the outermost: it sees every answer
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "node": self._node_id, "sessions": self._sessions()}
        )

    async def readyz(self, request: web.Request) -> web.Response:
        ok, checks = await self._readiness.check()
        return web.json_response({"ready": ok, **checks}, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        self._refresh()
        return web.Response(body=self._metrics.render(), content_type="text/plain")


#: Probes and scrapes, every few seconds from every orchestrator: logged at DEBUG only.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def access_log(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bind the request's id for every line its handling writes (echoed as ``X-Request-Id``),
    then write one ``gateway.access`` line: the route's template, never the raw path (no
    member id, code or token in the log). A websocket's line comes when its session ends."""
    rid = logs.request_id(request.headers.get("X-Request-Id"))
    tokens = logs.bind(request_id=rid)
    started = time.perf_counter()
    status = 500
    try:
        resp: web.StreamResponse = await handler(request)
        status = resp.status
        if not resp.prepared:
            resp.headers["X-Request-Id"] = rid
        return resp
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["X-Request-Id"] = rid
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "<unmatched>"
        ms = (time.perf_counter() - started) * 1000
        if route not in _QUIET or logs.ACCESS.isEnabledFor(logging.DEBUG):
            level = logging.DEBUG if route in _QUIET else logging.INFO
            logs.access(request.method, route, status, ms, request.remote, level)
        logs.unbind(tokens)
