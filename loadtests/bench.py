"""``python -m loadtests bench`` (``make bench``): the standard profile on this machine.

Creates a scratch database and Redis prefix, starts gateway nodes as subprocesses (fresh nodes
for each stage), runs the stages below, measures the baselines in the same run, writes
BENCHMARKS.md-ready markdown and a JSON file, drops the database and Redis keys.

Stages (sizes are flags; ``--quick`` shrinks them to finish in about two minutes):

1. checkout: reserve+commit flows open-loop at ``--checkout-rate`` over all nodes;
2. push: sale changes at ``--push-rate`` on ``--push-members`` members, each watched by
   ``--push-sessions-per-member`` sessions on nodes other than the POS's;
3. idle, one process: ``--idle-per-node`` sessions on one node: RSS per session, CPU at idle;
4. idle, all processes + broadcast: ``--idle-sessions`` over all nodes, then broadcasts,
   time to last receipt; then the naive aiohttp loop with the same sessions and processes;
5. baselines: pgbench, redis-benchmark; and ``loadtests.ledger_bench.run`` when it exists.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests import baselines, nodes
from loadtests.config import Config
from loadtests.runner import Run, SetupError, log
from loadtests.seed import prime, seed

#: Seconds over which idle CPU is measured: two heartbeat intervals, so every periodic job
#: (heartbeat walk, presence refresh) is counted in full, whatever the phase.
IDLE_CPU_WINDOW = 30.0

TARGETS = {
    "reserve_p99_ms": 10.0,
    "commit_p99_ms": 10.0,
    "push_p99_ms": 15.0,
    "idle_per_process": 20_000,
    "idle_total": 50_000,
    "broadcast_last_ms": 1000.0,
}

QUICK = {
    "checkout_rate": 2000.0,
    "checkout_seconds": 10.0,
    "push_rate": 1000.0,
    "push_seconds": 10.0,
    "push_members": 2000,
    "idle_per_node": 5000,
    "idle_sessions": 10_000,
    "broadcast_rounds": 3,
    "pgbench_seconds": 5.0,
    "redis_requests": 50_000,
}
FULL = {
    "checkout_rate": 2000.0,
    "checkout_seconds": 60.0,
    "push_rate": 1000.0,
    "push_seconds": 60.0,
    "push_members": 2000,
    "idle_per_node": 20_000,
    # a few connects time out while 50,000 sockets open on 2 cores: ask a little more than the
    # 50,000 the target is about (sessions held are what is reported)
    "idle_sessions": 51_000,
    "broadcast_rounds": 5,
    "pgbench_seconds": 10.0,
    "redis_requests": 200_000,
}


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes: about two minutes")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument(
        "--checkout-nodes",
        type=int,
        default=None,
        help="gateway nodes for the checkout stage (default: --nodes)",
    )
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="server to create the scratch database on (its database part is ignored)")  # fmt: skip
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    for name, value in FULL.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                       help=f"default {value} ({QUICK[name]} with --quick)")  # fmt: skip
    p.add_argument("--push-sessions-per-member", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="load-generator processes per stage")
    p.add_argument("--stages", default="checkout,push,idle,broadcast,baselines,ledger",
                   help="comma-separated subset of checkout,push,idle,broadcast,baselines,ledger")  # fmt: skip
    p.add_argument("--out", default="BENCHMARKS.md", help="markdown output ('-' for stdout only)")
    p.add_argument("--json", default=None, help="also write every figure as JSON here")


def main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    sizes = dict(QUICK if args.quick else FULL)
    for k in sizes:
        v = getattr(args, k)
        if v is not None:
            sizes[k] = v
    started = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:  # clean up nodes and the database on SIGTERM
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results = asyncio.run(Bench(args, sizes).run())
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    md = markdown(results)
    if args.out != "-":
        Path(args.out).write_text(md)
        log(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(md)
    return 0


class Bench:
    def __init__(self, args: argparse.Namespace, sizes: dict[str, Any]) -> None:
        self.args = args
        self.sizes = sizes
        self.stages = {s.strip() for s in args.stages.split(",")}
        self.scratch = nodes.Scratch(args.database_url, args.redis_url)
        self.results: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": "quick" if args.quick else "full",
            "sizes": sizes,
            "nodes": args.nodes,
            "machine": machine(),
        }

    async def run(self) -> dict[str, Any]:
        log(f"bench: scratch database {self.scratch.name}, redis prefix {self.scratch.prefix}")
        await self.scratch.create()
        try:
            for name in ("checkout", "push", "idle", "broadcast", "baselines", "ledger"):
                if name in self.stages:
                    log(f"bench: stage {name}")
                    try:
                        self.results[name] = await getattr(self, f"stage_{name}")()
                    except (SetupError, RuntimeError, TimeoutError, OSError) as exc:
                        log(f"bench: stage {name} failed: {exc}")
                        self.results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            await self.scratch.drop()
        return self.results

    def cfg(self, **kw: Any) -> Config:
        base = {
            "database_url": self.scratch.dsn,
            "out": None,
            "workers": self.args.workers,
            "quiesce": 10.0,
            "progress": True,
        }
        base.update(kw)
        return Config(**base)

    async def _scenario(
        self,
        cfg: Config,
        members: int,
        node_env: dict[str, str] | None = None,
        node_count: int | None = None,
    ) -> tuple[dict[str, Any], Run]:
        seeded = await seed(self.scratch.dsn, members, migrate=False)
        await prime(self.scratch.dsn)
        count = node_count or self.args.nodes
        async with nodes.cluster(self.scratch, count, node_env) as ns:
            cfg.url = [n.url for n in ns]
            run = Run(cfg, seeded)
            try:
                await run.prepare()
                run.start_workers()
                await run.wait_for("ready", run.setup_timeout())
                await run.run_load()
                await run.finish()
                return await run.report(), run
            finally:
                await run.stop()

    async def stage_checkout(self) -> dict[str, Any]:
        rate = self.sizes["checkout_rate"]
        cfg = self.cfg(
            scenario="checkout", rate=rate, duration=self.sizes["checkout_seconds"], ramp=3.0, warmup=3.0,
            steps=["reserve", "commit"], release_fraction=0.0, members=max(2000, int(rate)),
        )  # fmt: skip
        report, _ = await self._scenario(cfg, cfg.members, node_count=self.checkout_nodes)
        return {**_slim(report), "nodes": self.checkout_nodes}

    @property
    def checkout_nodes(self) -> int:
        return int(self.args.checkout_nodes or self.args.nodes)

    async def stage_push(self) -> dict[str, Any]:
        m = self.sizes["push_members"]
        cfg = self.cfg(
            scenario="sessions", rate=self.sizes["push_rate"], duration=self.sizes["push_seconds"],
            ramp=2.0, warmup=2.0, steps=["sale"], members=m, sessions=m * self.args.push_sessions_per_member,
        )  # fmt: skip
        report, _ = await self._scenario(cfg, m)
        return _slim(report)

    async def stage_idle(self) -> dict[str, Any]:
        """As many idle sessions as asked on one node: RSS per session and CPU at idle."""
        want = int(self.sizes["idle_per_node"])
        members = max(1, want // 3)
        seeded = await seed(self.scratch.dsn, members, migrate=False)
        probe = nodes.Node(self.scratch, "bench-probe")
        try:
            await probe.wait_ready()
            fds, limit = nodes.open_fds(probe.pid), nodes.nofile_soft(probe.pid)
        finally:
            probe.stop()
        # leave the node's own descriptors (pools, Redis, logs) plus headroom below the limit
        cap = max(1, limit - fds - 64)
        asked = min(want, cap)
        env = {"GATEWAY_MAX_SESSIONS": str(max(asked, 1))}
        out: dict[str, Any] = {
            "asked": want,
            "node_fd_limit": limit,
            "node_fds_at_start": fds,
            "cap": cap,
        }
        async with nodes.cluster(self.scratch, 1, env) as ns:
            node = ns[0]
            await asyncio.sleep(1.0)
            before = nodes.rss_kb(node.pid)
            cfg = self.cfg(scenario="broadcast", url=[node.url], sessions=asked, members=members,
                           rate=0.0, steps=[], duration=1.0, broadcast_count=0)  # fmt: skip
            run = Run(cfg, seeded)
            try:
                await run.prepare()
                t0 = time.monotonic()
                run.start_workers()
                await run.wait_for("ready", run.setup_timeout())
                connect_s = time.monotonic() - t0
                held = sum((w.ready or {}).get("watchers", 0) for w in run.workers)
                await asyncio.sleep(2.0)
                after = nodes.rss_kb(node.pid)
                c0 = nodes.cpu_seconds(node.pid)
                await asyncio.sleep(IDLE_CPU_WINDOW)
                cpu = (nodes.cpu_seconds(node.pid) - c0) / IDLE_CPU_WINDOW * 100
                errors: dict[str, int] = {}
                for w in run.workers:
                    for k, v in ((w.ready or {}).get("connect_errors") or {}).items():
                        errors[k] = errors.get(k, 0) + v
                out.update(
                    {
                        "held": held,
                        "connect_seconds": round(connect_s, 1),
                        "rss_before_mb": round(before / 1024, 1),
                        "rss_after_mb": round(after / 1024, 1),
                        "rss_per_session_kb": round((after - before) / max(1, held), 1),
                        "cpu_idle_percent_of_core": round(cpu, 1),
                        "heartbeat_s": 15,
                        "connect_errors": errors,
                    }
                )
            finally:
                await run.stop()
        return out

    async def stage_broadcast(self) -> dict[str, Any]:
        """``--idle-sessions`` over every node, then broadcasts; then the naive loop."""
        total = int(self.sizes["idle_sessions"])
        per_node = -(-total // self.args.nodes)
        members = max(1, total // 3)
        seeded = await seed(self.scratch.dsn, members, migrate=False)
        env = {"GATEWAY_MAX_SESSIONS": str(per_node + 100)}
        out: dict[str, Any] = {"asked": total}
        async with nodes.cluster(self.scratch, self.args.nodes, env) as ns:
            await asyncio.sleep(1.0)
            before = {n.node_id: nodes.rss_kb(n.pid) for n in ns}
            cfg = self.cfg(scenario="broadcast", url=[n.url for n in ns], sessions=total, members=members,
                           rate=0.0, steps=[], duration=1.0, broadcast_count=int(self.sizes["broadcast_rounds"]),
                           broadcast_interval=2.0)  # fmt: skip
            run = Run(cfg, seeded)
            try:
                await run.prepare()
                t0 = time.monotonic()
                run.start_workers()
                await run.wait_for("ready", run.setup_timeout())
                connect_s = time.monotonic() - t0
                await asyncio.sleep(2.0)
                after = {n.node_id: nodes.rss_kb(n.pid) for n in ns}
                per = {w: 0 for w in after}
                held = sum((w.ready or {}).get("watchers", 0) for w in run.workers)
                c0 = {n.node_id: nodes.cpu_seconds(n.pid) for n in ns}
                await asyncio.sleep(IDLE_CPU_WINDOW)
                cpu = {
                    n.node_id: round(
                        (nodes.cpu_seconds(n.pid) - c0[n.node_id]) / IDLE_CPU_WINDOW * 100, 1
                    )
                    for n in ns
                }
                await run.run_load()
                await run.finish()
                report = await run.report()
                gc_pauses = {n.node_id: await nodes.gc_pauses(n.url) for n in ns}
                out.update(
                    {
                        "held": held,
                        "gc_pauses": gc_pauses,
                        "workers": len(run.workers),
                        "connect_seconds": round(connect_s, 1),
                        "rss_mb": {k: round(after[k] / 1024, 1) for k in after},
                        "rss_per_session_kb": round(
                            sum(after[k] - before[k] for k in after) / max(1, held), 1
                        ),
                        "cpu_idle_percent_of_core": cpu,
                        "broadcast": report["broadcast"],
                        "broadcast_latency": report["latency"].get("broadcast"),
                        "connect_latency": report["latency"].get("connect"),
                        "errors": report["errors"],
                    }
                )
                del per
            finally:
                await run.stop()
        if out["broadcast"].get("supported") is not False:
            workers = len(run.workers) or 1
            log(f"bench: naive aiohttp broadcast loop to {total} sessions")
            out["naive"] = await baselines.naive_broadcast(
                total, self.args.nodes, int(self.sizes["broadcast_rounds"]), workers, cfg.source_ips
            )
        return out

    async def stage_baselines(self) -> dict[str, Any]:
        log("bench: pgbench")
        pg = await baselines.pgbench(self.scratch.dsn, self.sizes["pgbench_seconds"])
        log("bench: redis-benchmark")
        rb = await baselines.redis_benchmark(
            self.args.redis_url, self.scratch.prefix, int(self.sizes["redis_requests"])
        )
        return {"pgbench": pg, "redis": rb}

    async def stage_ledger(self) -> dict[str, Any]:
        """``loadtests.ledger_bench.run(...)`` from the ledger engineer, when it exists."""
        try:
            from loadtests import ledger_bench  # type: ignore[attr-defined]
        except ImportError:
            return {"skipped": "loadtests/ledger_bench.py is not there yet"}
        fn = getattr(ledger_bench, "run", None)
        if fn is None:
            return {"skipped": "loadtests.ledger_bench has no run()"}
        offered = {
            "database_url": self.args.database_url,
            "redis_url": self.args.redis_url,
            "quick": self.args.quick,
        }
        params = inspect.signature(fn).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
        try:
            if inspect.iscoroutinefunction(fn):
                result = await fn(**kwargs)
            else:  # it may run its own event loop: keep it off ours
                result = await asyncio.to_thread(fn, **kwargs)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        out: dict[str, Any] = {"result": result}
        render = getattr(ledger_bench, "markdown", None)
        if callable(render):
            try:
                out["markdown"] = render(result)
            except Exception as exc:
                out["markdown_error"] = repr(exc)
        return out


def _slim(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("latency", "throughput", "counters", "errors", "connections", "verdict", "offered_rate_per_s",
            "duration_s", "workers", "client_notes")  # fmt: skip
    out = {k: report.get(k) for k in keep}
    out["verdict_ok"] = report["verdict"]["ok"]
    return out


def machine() -> dict[str, Any]:
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024 // 1024
    except OSError:
        pass
    pg = _version(["psql", "--version"])
    rd = _version(["redis-server", "--version"])
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgres": pg,
        "redis": rd,
    }


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()[:60]
    except (OSError, subprocess.SubprocessError):
        return "?"


# ----------------------------------------------------------------------------- markdown


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _verdict(
    actual: float | None, target: float, lower_is_better: bool = True, measured: bool = True
) -> str:
    if actual is None:
        return "not measured"
    ok = actual <= target if lower_is_better else actual >= target
    if not measured:
        return ("pass" if ok else "miss") + " (below target size)"
    return "PASS" if ok else "MISS"


def markdown(r: dict[str, Any]) -> str:
    s = r["sizes"]
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `python -m loadtests bench{' --quick' if r['profile'] == 'quick' else ''}` on "
        f"{r['date'][:10]} ({r['profile']} profile, {r.get('wall_seconds', '?')} s wall): {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, {m['postgres']}, {m['redis']}. "
        f"{r['nodes']} gateway nodes, the load generator, PostgreSQL and Redis all share this machine: "
        "every figure includes the generator's own CPU. Latencies are open-loop, measured from each "
        "send's scheduled time (HdrHistogram, merged across generator processes). "
        "Regenerate with `make bench` (full, ~10 min) or `python -m loadtests bench --quick`.",
        "",
        "## Against the issue's targets",
        "",
        "| figure | target | measured | |",
        "|---|---|---|---|",
    ]
    co = r.get("checkout") or {}
    lat = co.get("latency") or {}
    for step in ("reserve", "commit"):
        x = lat.get(step) or {}
        lines.append(
            f"| {step}→reply p99 at {_f(s['checkout_rate'], 0)} reserve+commit flows/s, "
            f"{co.get('nodes', r['nodes'])} node(s) | ≤ 10 ms | "
            f"{_f(x.get('p99_ms'), 2)} ms | {_verdict(x.get('p99_ms'), 10.0)} |"
        )
    pu = r.get("push") or {}
    px = (pu.get("latency") or {}).get("push") or {}
    lines.append(
        f"| push commit-reply→receipt p99 at {_f(s['push_rate'], 0)} changes/s, {r['nodes']} nodes, "
        f"3 sessions/member | ≤ 15 ms | {_f(px.get('p99_ms'), 2)} ms | {_verdict(px.get('p99_ms'), 15.0)} |"
    )
    idle = r.get("idle") or {}
    held1 = idle.get("held")
    lines.append(
        f"| idle sessions held by one gateway process | ≥ 20,000 | {_f(held1)} (asked {_f(idle.get('asked'))}) | "
        f"{_verdict(held1, 20_000, False, (idle.get('asked') or 0) >= 20_000)} |"
    )
    bc = r.get("broadcast") or {}
    lines.append(
        f"| idle sessions across {r['nodes']} processes | ≥ 50,000 | {_f(bc.get('held'))} (asked {_f(bc.get('asked'))}) | "
        f"{_verdict(bc.get('held'), 50_000, False, (bc.get('asked') or 0) >= 50_000)} |"
    )
    b = bc.get("broadcast") or {}
    last = b.get("last_receipt_ms")
    if b.get("supported") is False:
        lines.append(
            "| broadcast to 50,000 sessions, last receipt | < 1 s | unsupported (404) | - |"
        )
    else:
        lines.append(
            f"| broadcast to {_f(bc.get('held'))} sessions, time to last receipt (median of rounds) | < 1 s (at 50,000) | "
            f"{_f(last)} ms | {_verdict(last, 1000.0, True, (bc.get('held') or 0) >= 50_000)} |"
        )
    lines += ["", "## Checkout: reserve + commit flows, open-loop", ""]
    if co:
        lines += [f"{co.get('nodes', r['nodes'])} gateway node(s).", ""]
    lines += _latency_table(co, ("reserve", "commit", "flow"))
    lines += _run_notes(co)
    lines += ["", "## Push: commit reply to receipt on another node's session", ""]
    lines += _latency_table(pu, ("sale", "push", "connect"))
    lines += _run_notes(pu)
    lines += ["", "## Idle sessions", ""]
    if idle.get("error"):
        lines.append(f"One process: failed: {idle['error']}")
    elif idle:
        lines.append(
            f"One process: {_f(held1)} sessions held (asked {_f(idle.get('asked'))}; the node's open-files limit is "
            f"{_f(idle.get('node_fd_limit'))} and it uses {_f(idle.get('node_fds_at_start'))} before any session, so "
            f"it can hold at most {_f(idle.get('cap'))}), connected in {_f(idle.get('connect_seconds'))} s; "
            f"RSS {_f(idle.get('rss_before_mb'))} → {_f(idle.get('rss_after_mb'))} MB = "
            f"**{_f(idle.get('rss_per_session_kb'))} KB per idle session**; CPU at idle "
            f"{_f(idle.get('cpu_idle_percent_of_core'))} % of one core over {IDLE_CPU_WINDOW:.0f} s (heartbeat pings every 15 s)."
        )
    if bc.get("error"):
        lines.append(f"\nAll processes: failed: {bc['error']}")
    elif bc:
        lines.append(
            f"\nAll {r['nodes']} processes: {_f(bc.get('held'))} sessions held (asked {_f(bc.get('asked'))}) from "
            f"{_f(bc.get('workers'))} generator processes, connected in {_f(bc.get('connect_seconds'))} s; "
            f"RSS per session {_f(bc.get('rss_per_session_kb'))} KB; RSS per node {bc.get('rss_mb')} MB; "
            f"CPU at idle per node (% of a core) {bc.get('cpu_idle_percent_of_core')}."
        )
        if bc.get("errors"):
            lines.append(f"Connection errors: {bc['errors']}.")
        for node_id, gens in sorted((bc.get("gc_pauses") or {}).items()):
            parts = ", ".join(
                f"gen {g}: {_f(x['count'], 0)} pauses, mean {_f(x['mean_ms'])} ms"
                for g, x in sorted(gens.items())
            )
            lines.append(f"Collector pauses on {node_id} over the stage (wall time): {parts}.")
    lines += ["", "## Broadcast: one notice to every session", ""]
    naive = bc.get("naive") or {}
    if b.get("supported") is False:
        lines.append("The gateway answered 404 for POST /admin/broadcast: unsupported.")
    elif b:
        for rd in b.get("rounds", []):
            lines.append(
                f"- gateway round {rd['marker'][-1]}: {_f(rd['received'])}/{_f(rd['sessions'])} sessions, "
                f"last receipt {_f(rd['last_receipt_ms'])} ms (HTTP reply {_f(rd['reply_ms'])} ms)"
            )
        bl = bc.get("broadcast_latency") or {}
        lines.append(
            f"- gateway per-session receipt: p50 {_f(bl.get('p50_ms'))} ms, p99 {_f(bl.get('p99_ms'))} ms"
        )
        if naive.get("error"):
            lines.append(f"- naive loop: failed: {naive['error']}")
        elif naive:
            for i, rd in enumerate(naive.get("rounds", [])):
                lines.append(
                    f"- naive aiohttp loop round {i}: {_f(rd['received'])}/{_f(naive.get('sessions'))} sessions over "
                    f"{naive.get('servers')} processes, last receipt {_f(rd['last_receipt_ms'])} ms"
                )
            if last and naive.get("last_receipt_ms"):
                lines.append(
                    f"- **ratio gateway / naive (median last receipt): {last / naive['last_receipt_ms']:.2f}x** "
                    f"({_f(last)} ms vs {_f(naive['last_receipt_ms'])} ms)"
                )
    lines += ["", "## Baselines (same run, same machine)", ""]
    base = r.get("baselines") or {}
    pg = base.get("pgbench") or {}
    rd_ = base.get("redis") or {}
    ledger_ops = None
    if lat.get("reserve") and co.get("duration_s"):
        ledger_ops = (
            (lat["reserve"]["count"] or 0) + ((lat.get("commit") or {}).get("count") or 0)
        ) / co["duration_s"]
    lines.append("| path | baseline | baseline figure | gateway figure | ratio |")
    lines.append("|---|---|---|---|---|")
    if pg.get("tps"):
        lines.append(
            f"| ledger | pgbench, 16 clients, {pg.get('seconds')} s: {pg['what']} | {_f(pg['tps'])} tx/s, "
            f"avg {_f(pg.get('latency_avg_ms'), 2)} ms | {_f(ledger_ops)} ledger ops/s (reserve+commit replies) | "
            f"{(ledger_ops or 0) / pg['tps']:.2f}x |"
        )
    elif pg:
        lines.append(f"| ledger | pgbench | {pg.get('error', '-')} | | |")
    for key, label in (("eval_hold", "EVAL check-and-hold, 50 clients"), ("eval_hold_pipelined16", "same, pipelined 16"),
                       ("publish", "PUBLISH 160 B, 50 clients")):  # fmt: skip
        x = rd_.get(key) or {}
        if x.get("ops_per_s"):
            ratio = f"{(ledger_ops or 0) / x['ops_per_s']:.3f}x" if key != "publish" else "-"
            gw = (
                f"{_f(ledger_ops)} ledger ops/s"
                if key != "publish"
                else f"{_f((pu.get('throughput') or {}).get('pushes_per_s'))} pushes/s delivered"
            )
            lines.append(
                f"| Redis | redis-benchmark {label} | {_f(x['ops_per_s'])} ops/s (p50 {_f(x.get('p50_ms'), 3)} ms) | {gw} | {ratio} |"
            )
    if naive.get("last_receipt_ms"):
        lines.append(
            f"| fan-out | naive aiohttp `send_str` loop, {_f(naive.get('sessions'))} sessions | "
            f"{_f(naive['last_receipt_ms'])} ms to last receipt | {_f(last)} ms | "
            f"{(last or 0) / naive['last_receipt_ms']:.2f}x |"
        )
    led = r.get("ledger") or {}
    if led:
        lines += ["", "## Ledger engine (loadtests.ledger_bench)", ""]
        if led.get("markdown"):
            lines.append(led["markdown"].strip())
        elif "result" in led:
            res = led["result"]
            if isinstance(res, str):
                lines.append(res)
            elif isinstance(res, dict):
                lines += ["| figure | value |", "|---|---|"] + [
                    f"| {k} | {_f(v)} |" for k, v in res.items()
                ]
            else:
                lines.append(f"```\n{json.dumps(res, indent=2, default=str)}\n```")
        else:
            lines.append(led.get("skipped") or led.get("error") or "")
    lines += [
        "",
        "## Reading these figures",
        "",
        "- Two cores run everything: three gateway processes, PostgreSQL, Redis and the generator. "
        "A figure that misses its target here says what this box does, not what the design can do "
        "on dedicated hosts; compare ratios to the baselines, and repeat runs (VM steal time moves "
        "tails from run to run).",
        "- `late` sends left more than 5 ms after their scheduled time (the generator fell behind); "
        "`dropped` were not sent at all (too many in flight). Either means the generator, not only "
        "the gateway, was saturated: the latencies still count from the scheduled time.",
        "- See loadtests/README.md for what every number means and how to size from them.",
    ]
    return "\n".join(lines) + "\n"


def _latency_table(stage: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    if not stage:
        return ["not run"]
    if stage.get("error"):
        return [f"failed: {stage['error']}"]
    lat = stage.get("latency") or {}
    out = [
        "| metric | count | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        x = lat.get(n)
        if x:
            out.append(
                f"| {n} | {_f(x['count'])} | {_f(x['p50_ms'], 2)} | {_f(x['p90_ms'], 2)} | {_f(x['p99_ms'], 2)} | "
                f"{_f(x['p99.9_ms'], 2)} | {_f(x['max_ms'], 2)} |"
            )
    return out


def _run_notes(stage: dict[str, Any]) -> list[str]:
    if not stage or stage.get("error"):
        return []
    c = stage.get("counters") or {}
    t = stage.get("throughput") or {}
    v = stage.get("verdict") or {}
    notes = [
        "",
        f"Offered {_f(stage.get('offered_rate_per_s'))}/s over {_f(stage.get('duration_s'))} s; achieved "
        f"{_f(t.get('flows_per_s'))} flows/s, {_f(t.get('commands_per_s'))} commands/s, "
        f"{_f(t.get('pushes_per_s'))} pushes/s delivered; late {_f(c.get('late', 0))}, dropped "
        f"{_f(c.get('dropped', 0))}, errors {_f(c.get('errors_total', 0))}"
        + (f" ({stage['errors']})" if stage.get("errors") else "")
        + f"; {stage.get('workers')} generator processes.",
        f"Correctness verdict: **{'correct' if v.get('ok') else 'INCORRECT'}** — "
        + "; ".join(f"{ch['name']}: {ch['detail']}" for ch in v.get("checks", [])),
    ]
    return notes
