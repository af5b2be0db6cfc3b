"""The operator's endpoints of a node: ``/healthz`` (the process answers), ``/readyz`` (it can
serve: not draining, PostgreSQL and Redis answer) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from gateway.metrics import Metrics
from gateway.store.redis import Redis


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
        ok = not draining and checks["postgres"] == "ok" and checks["redis"] == "ok"
        self._metrics.ready.set(1 if ok else 0)
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
