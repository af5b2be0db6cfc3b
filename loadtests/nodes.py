"""Local gateway nodes for ``bench``: a scratch database, a Redis prefix, ``python -m gateway
serve`` subprocesses, and what the OS says about them (RSS, CPU, descriptors)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def nofile_soft(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def _dsn_for(base: str, database: str) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}"


@dataclass
class Scratch:
    """A database created for this bench and dropped at the end, and a Redis key prefix."""

    admin_dsn: str
    redis_url: str
    name: str = field(default_factory=lambda: f"lt_bench_{uuid.uuid4().hex[:8]}")
    prefix: str = field(default_factory=lambda: f"ltb{uuid.uuid4().hex[:8]}")

    @property
    def dsn(self) -> str:
        return _dsn_for(self.admin_dsn, self.name)

    async def create(self) -> None:
        import asyncpg

        from gateway.schema import migrate

        admin = await asyncpg.connect(_dsn_for(self.admin_dsn, "postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop(self) -> None:
        import asyncpg
        import redis.asyncio as aioredis

        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(_dsn_for(self.admin_dsn, "postgres"))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            finally:
                await admin.close()
        with contextlib.suppress(Exception):
            r = aioredis.Redis.from_url(self.redis_url)
            try:
                keys = [k async for k in r.scan_iter(match=f"{self.prefix}:*", count=1000)]
                for i in range(0, len(keys), 1000):
                    await r.delete(*keys[i : i + 1000])
            finally:
                await r.aclose()


class Node:
    def __init__(
        self,
        scratch: Scratch,
        node_id: str,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.node_id = node_id
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": scratch.dsn,
                "REDIS_URL": scratch.redis_url,
                "GATEWAY_REDIS_PREFIX": scratch.prefix,
                "GATEWAY_PORT": str(self.port),
                "GATEWAY_NODE_ID": node_id,
                "GATEWAY_LOG_LEVEL": "WARNING",
                "GATEWAY_DRAIN_SECONDS": "3",
            }
        )
        env.update(extra_env or {})
        # the collector policy the benchmarks measure (the gateway's default, pinned here)
        env.setdefault("GATEWAY_GC_FREEZE_SECONDS", "10")
        self.log = tempfile.NamedTemporaryFile(prefix=f"lt-{node_id}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node {self.node_id} exited: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"node {self.node_id} not ready: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return Path(self.log.name).read_text()[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


def lanes_per_node(nodes: int, cores: int | None = None) -> int:
    """Ledger lanes per node so that the cluster runs about one transaction per two cores at
    a time: PostgreSQL, the nodes and the generator share the cores, and every lane is a
    transaction in flight, so more lanes made smaller batches and more work per operation.
    Quick checkouts at 2,000 flows/s (2026-11-24, interleaved): one node with one lane,
    reserve p99 9.9/10.1/20.4/24.1 ms; one node with two, 20.3/20.5/34.3/66.4 ms; three nodes
    with one each, 28.2/31.0/52.8 ms (three with two each had been 92-104 ms). An explicit
    ``GATEWAY_LEDGER_LANES`` in the environment wins."""
    if "GATEWAY_LEDGER_LANES" in os.environ:
        return int(os.environ["GATEWAY_LEDGER_LANES"])
    return max(1, round((cores or os.cpu_count() or 1) / 2 / nodes))


@contextlib.asynccontextmanager
async def cluster(scratch: Scratch, n: int, extra_env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    env = {"GATEWAY_LEDGER_LANES": str(lanes_per_node(n)), **(extra_env or {})}
    nodes = [Node(scratch, f"bench-{chr(97 + i)}", env) for i in range(n)]
    try:
        await asyncio.gather(*(node.wait_ready() for node in nodes))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def _metrics_text(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        return await resp.text()


def _histogram(text: str, metric: str, label: str) -> dict[str, dict[str, float]]:
    """One labelled Prometheus histogram of a ``/metrics`` text, per label value: count,
    total and mean ms, and how many observations were above 10 ms and above 50 ms. Labels are
    read by name, in any order (the client library writes them sorted: ``le`` comes before
    ``phase`` but after ``generation``)."""
    import re

    line = re.compile(rf"^{metric}_(bucket|sum|count)\{{([^}}]*)\}} (\S+)$", re.M)
    pair = re.compile(r'(\w+)="([^"]*)"')
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    upto10: dict[str, float] = {}
    upto50: dict[str, float] = {}
    for kind, labels, value in line.findall(text):
        names = dict(pair.findall(labels))
        key = names.get(label)
        if key is None:
            continue
        if kind == "sum":
            sums[key] = float(value)
        elif kind == "count":
            counts[key] = float(value)
        elif names.get("le") == "0.01":
            upto10[key] = float(value)
        elif names.get("le") == "0.05":
            upto50[key] = float(value)
    out = {}
    for key, n in counts.items():
        total = sums.get(key, 0.0) * 1000
        out[key] = {
            "count": n,
            "total_ms": round(total, 1),
            "mean_ms": round(total / max(1.0, n), 2),
            "over_10ms": n - upto10.get(key, n),
            "over_50ms": n - upto50.get(key, n),
        }
    return out


async def gc_pauses(url: str) -> dict[str, dict[str, float]]:
    """The node's collector pauses so far, per generation (``gateway_gc_pause_seconds``)."""
    return _histogram(await _metrics_text(url), "gateway_gc_pause_seconds", "generation")


async def ledger_phases(url: str) -> dict[str, dict[str, float]]:
    """The node's ledger batches so far, per phase: queue, statements, commit (the WAL flush)
    (``gateway_ledger_batch_seconds``)."""
    return _histogram(await _metrics_text(url), "gateway_ledger_batch_seconds", "phase")


def histogram_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """What a node's histogram (``gc_pauses``, ``ledger_phases``) recorded between two
    readings."""
    out = {}
    for key, a in after.items():
        b = before.get(key, {})
        n = a["count"] - b.get("count", 0.0)
        total = a["total_ms"] - b.get("total_ms", 0.0)
        out[key] = {
            "count": n,
            "total_ms": round(total, 1),
            "mean_ms": round(total / max(1.0, n), 2),
            "over_10ms": a.get("over_10ms", 0.0) - b.get("over_10ms", 0.0),
            "over_50ms": a.get("over_50ms", 0.0) - b.get("over_50ms", 0.0),
        }
    return out
