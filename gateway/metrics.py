"""Prometheus metrics for one node (a registry per node, so several nodes can share a process
in tests), by Prometheus' conventions: counters end in ``_total``, durations are ``_seconds``
histograms, the client library's ``process_*`` and ``python_*`` collectors come with them,
``gateway_build_info`` says what runs. Names are listed in deploy/README.md."""

from __future__ import annotations

import gc
import platform
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from protocol.messages import Error

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


#: The running totals a node keeps itself (its ledger's, its collector's), read at scrape
#: time and exported as counters: name, help.
TOTALS = {
    "gateway_ledger_batches": "Group-commit transactions the node's ledger lanes ran",
    "gateway_ledger_operations": "Ledger operations those batches held",
    "gateway_ledger_shed": (
        "Operations refused at once (unavailable) because their lane's queue waited too long"
    ),
    "gateway_gc_reclaimed_objects": (
        "Objects the periodic full collections found unreachable (kept from the collector by "
        "the freeze until then)"
    ),
}


class _Totals(Collector):
    """Counters whose value the node counts elsewhere (``ledger.stats``): set at scrape time,
    exported as ``<name>_total`` (a Counter of the client library can only be incremented)."""

    def __init__(self) -> None:
        self.values = dict.fromkeys(TOTALS, 0.0)

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, text in TOTALS.items():
            yield CounterMetricFamily(name, text, value=self.values[name])


def _version() -> str:
    try:
        return metadata.version("loyalty-gateway")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the client library's own: CPU, memory, open files and their limit, start time (Linux);
        # the interpreter; its garbage collector
        for default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(default)
        self.totals = _Totals()
        r.register(self.totals)
        Gauge(
            "gateway_build_info",
            "1, with the running gateway's version and Python in labels",
            ["version", "python"],
            registry=r,
        ).labels(_version(), platform.python_version()).set(1)
        self.commands = Histogram(
            "gateway_command_seconds",
            "Command handling time",
            ["command"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "gateway_command_errors_total", "Error replies by code", ["command", "code"], registry=r
        )
        self.closes = Counter(
            "gateway_closes_total", "Server-side session closes by code", ["code"], registry=r
        )
        self.origin_refused = Counter(
            "gateway_origin_refused_total",
            "Browser connections to /ws refused for their page's origin",
            registry=r,
        )
        self.sessions = Gauge("gateway_sessions", "Welcomed live sessions", registry=r)
        self.connections = Gauge(
            "gateway_connections",
            "Open websocket connections, welcomed or still to say hello (what an autoscaler "
            "scales on)",
            registry=r,
        )
        self.feeds = Gauge("gateway_member_feeds", "Members watched on this node", registry=r)
        self.outbox = Gauge("gateway_outbox_pending", "Unpublished committed changes", registry=r)
        self.batch_phases = Histogram(
            "gateway_ledger_batch_seconds",
            "Each group-commit batch by phase: queue (its oldest operation's wait in the lane), "
            "statements (locks, reads, writes), commit (the WAL flush every reply waits on)",
            ["phase"],
            buckets=_BUCKETS,
            registry=r,
        )
        self._queue = self.batch_phases.labels("queue")
        self._statements = self.batch_phases.labels("statements")
        self._commit = self.batch_phases.labels("commit")
        self.ready = Gauge(
            "gateway_ready",
            "1 when the node can serve (not draining, PostgreSQL answers), kept by the node",
            registry=r,
        )
        self.redis_up = Gauge(
            "gateway_redis_up", "1 when Redis answered the node's last health check", registry=r
        )
        self.gc_pauses = Histogram(
            "gateway_gc_pause_seconds",
            "Cyclic garbage collector pauses (the event loop stands still meanwhile)",
            ["generation"],
            buckets=_BUCKETS,
            registry=r,
        )
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self.gc_pauses.labels(str(info["generation"])).observe(pause)

    def watch_gc(self) -> None:
        """Record every collector pause of this process (until ``unwatch_gc``)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def ledger_batch(self, queue: float, statements: float, commit: float) -> None:
        self._queue.observe(queue)
        self._statements.observe(statements)
        self._commit.observe(commit)

    def command(self, name: str, seconds: float, reply: object) -> None:
        self.commands.labels(name).observe(seconds)
        if isinstance(reply, Error):
            self.errors.labels(name, reply.code).inc()

    def close(self, code: int) -> None:
        self.closes.labels(str(code)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
