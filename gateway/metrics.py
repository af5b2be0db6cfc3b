"""Prometheus metrics for one node (a registry per node, so several nodes can share a process
in tests). Names are listed in deploy/README.md."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from protocol.messages import Error

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.sessions = Gauge("gateway_sessions", "Live sessions", registry=r)
        self.feeds = Gauge("gateway_member_feeds", "Members watched on this node", registry=r)
        self.outbox = Gauge("gateway_outbox_pending", "Unpublished committed changes", registry=r)
        self.batches = Gauge("gateway_ledger_batches", "Group-commit transactions", registry=r)
        self.ledger_ops = Gauge("gateway_ledger_operations", "Ledger operations", registry=r)
        self.ledger_shed = Gauge(
            "gateway_ledger_shed",
            "Operations refused at once (unavailable) because their lane's queue waited too long",
            registry=r,
        )
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
        self.ready = Gauge("gateway_ready", "1 when the node is ready", registry=r)
        self.gc_pauses = Histogram(
            "gateway_gc_pause_seconds",
            "Cyclic garbage collector pauses (the event loop stands still meanwhile)",
            ["generation"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.gc_reclaimed = Gauge(
            "gateway_gc_reclaimed_objects",
            "Objects the periodic full collections found unreachable (kept from the collector "
            "by the freeze until then)",
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
