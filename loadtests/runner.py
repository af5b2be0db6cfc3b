"""The parent process of a run: seed, start workers, pace the phases, merge, judge, report.

Exit codes (also in README):

====  =========================================================================
0     every check passed, every SLO met
1     the run could not be made (gateway unreachable, seeding failed, a worker died)
2     errors: the correctness verdict failed, or errors/dropped sends above
      ``--max-error-rate``
3     an SLO was breached (and no errors)
4     the scenario is not supported by this deployment (broadcast endpoint 404)
64    bad flags or scenario file
====  =========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from loadtests import preflight as pre
from loadtests import verdict as vd
from loadtests.config import Config
from loadtests.hist import Histograms
from loadtests.seed import Seeded, seed
from loadtests.slo import evaluate, parse_slo

EXIT_OK, EXIT_SETUP, EXIT_ERRORS, EXIT_SLO, EXIT_UNSUPPORTED = 0, 1, 2, 3, 4


#: Histograms recorded from the start of the load, warmup included (the rest leave it out).
_FROM_START = frozenset({"connect", "resubscribe", "reconnect", "broadcast"})


class SetupError(RuntimeError):
    pass


@dataclass
class WorkerHandle:
    index: int
    proc: Any
    conn: Connection
    members: list[str] = field(default_factory=list)
    ready: dict[str, Any] | None = None
    drained: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    closed: bool = False


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Run:
    """One scenario run. ``bench`` drives the phases itself to measure between them."""

    def __init__(self, cfg: Config, seeded: Seeded | None = None) -> None:
        self.cfg = cfg
        self.seeded = seeded
        self.run_id = ""
        self.workers: list[WorkerHandle] = []
        self.started_ns = 0
        self.load_started = 0.0
        self.load_ended = 0.0
        self.broadcasts: list[dict[str, Any]] = []
        self.preflight: pre.Preflight | None = None
        self.broadcast_supported: bool | None = None

    # ------------------------------------------------------------------ phases
    async def prepare(self) -> None:
        from loadtests.seed import run_id

        cfg = self.cfg
        self.run_id = run_id()
        await self.check_nodes()
        if self.seeded is None:
            if cfg.members_file:
                self.seeded = Seeded.load(cfg.members_file)
            elif cfg.database_url:
                log(f"seeding {cfg.members} members ...")
                self.seeded = await seed(
                    cfg.database_url, cfg.members, cfg.seed_points, cfg.merchant, self.run_id
                )
            else:
                raise SetupError(
                    "give --database-url (to seed) or --members-file (from `seed --out`)"
                )
        if len(self.seeded.members) < 1:
            raise SetupError("no members")

    async def check_nodes(self) -> None:
        async with aiohttp.ClientSession() as http:
            for url in self.cfg.url:
                try:
                    async with asyncio.timeout(5):
                        async with http.get(url.rstrip("/") + "/healthz") as resp:
                            if resp.status != 200:
                                raise SetupError(f"{url}/healthz answered {resp.status}")
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise SetupError(f"gateway {url} is unreachable: {exc!r}") from None

    def start_workers(self) -> None:
        cfg = self.cfg
        assert self.seeded is not None
        members = self.seeded.members
        n = min(cfg.auto_workers(), len(members))
        terminals = cfg.auto_terminals() if cfg.steps and cfg.peak_rate() > 0 else 0
        if terminals:  # every worker paces its share of the rate through terminals of its own
            terminals = max(terminals, n)
        conns = cfg.sessions + terminals
        if cfg.source_ips is None:
            cfg.source_ips = pre.auto_source_ips(cfg.url, conns)
        self.preflight = pre.check(conns, n, cfg.source_ips)
        for line in self.preflight.lines():
            log(line)
        if not self.preflight.ok:
            raise SetupError("pre-flight failed: " + "; ".join(self.preflight.problems))
        ctx = multiprocessing.get_context("spawn")
        stages = [(s.duration, s.start, s.end) for s in cfg.arrival_stages()]
        secret = cfg.resolved_secret()
        for i in range(n):
            lo, hi = len(members) * i // n, len(members) * (i + 1) // n
            sessions = cfg.sessions * (i + 1) // n - cfg.sessions * i // n
            spec = {
                "index": i,
                "count": n,
                "run": self.run_id,
                "merchant": self.seeded.merchant,
                "members": members[lo:hi],
                "sessions": sessions,
                "terminals": terminals * (i + 1) // n - terminals * i // n if terminals else 0,
                "stages": stages,
                "secret": secret,
                "config": cfg.to_dict(),
            }
            parent, child = ctx.Pipe()
            from loadtests.worker import entry

            proc = ctx.Process(target=entry, args=(child, spec), daemon=True, name=f"loadtest-w{i}")
            proc.start()
            child.close()
            self.workers.append(WorkerHandle(i, proc, parent, members[lo:hi]))

    def poll(self) -> None:
        for w in self.workers:
            try:
                while w.conn.poll():
                    msg = w.conn.recv()
                    kind = msg[0]
                    if kind == "ready":
                        w.ready = msg[2]
                    elif kind == "drained":
                        w.drained = msg[2]
                    elif kind == "progress":
                        w.progress = msg[2]
                    elif kind == "result":
                        w.result = msg[2]
                    elif kind == "error":
                        w.error = msg[2]
                        log(f"worker {w.index} failed: {msg[2]}\n{msg[3]}")
                    elif kind == "closed":
                        w.closed = True
            except (EOFError, OSError):
                w.closed = True
            if not w.closed and not w.proc.is_alive():
                w.closed = True
                if w.result is None and w.error is None:
                    w.error = f"worker exited with {w.proc.exitcode}"

    async def wait_for(self, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_line = 0.0
        while time.monotonic() < deadline:
            self.poll()
            failed = [w for w in self.workers if w.error]
            if failed:
                raise SetupError(f"worker {failed[0].index}: {failed[0].error}")
            if all(getattr(w, what) is not None for w in self.workers):
                return
            if self.cfg.progress and time.monotonic() - last_line >= 1.0 and what == "ready":
                last_line = time.monotonic()
                log(
                    f"[setup] workers ready {sum(w.ready is not None for w in self.workers)}/{len(self.workers)}"
                )
            await asyncio.sleep(0.05)
        raise SetupError(f"workers not {what} within {timeout:.0f} s")

    def setup_timeout(self) -> float:
        if self.cfg.setup_timeout > 0:
            return self.cfg.setup_timeout
        return 30.0 + self.cfg.sessions / 200.0

    def broadcast(self, w: int, kind: str) -> None:
        for h in self.workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                h.conn.send((kind,) if w < 0 else (kind, w))

    async def run_load(self) -> None:
        """Start every worker at one monotonic instant, pace broadcasts, print progress."""
        cfg = self.cfg
        start = time.monotonic_ns() + 300_000_000
        for h in self.workers:
            h.conn.send(("start", start))
        self.started_ns = start
        await asyncio.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
        self.load_started = time.monotonic()
        duration = cfg.load_seconds
        bc_times = [
            min(duration, 1.0) + i * cfg.broadcast_interval for i in range(cfg.broadcast_count)
        ]
        end = max([duration, *(t + 2.0 for t in bc_times)])
        async with aiohttp.ClientSession() as http:
            next_line = 1.0
            while True:
                elapsed = time.monotonic() - self.load_started
                if elapsed >= end:
                    break
                if bc_times and elapsed >= bc_times[0]:
                    bc_times.pop(0)
                    await self.post_broadcast(http, len(self.broadcasts))
                    if self.broadcast_supported is False:
                        bc_times.clear()
                        end = min(end, max(duration, elapsed))
                self.poll()
                if any(w.error or (w.closed and w.result is None) for w in self.workers):
                    raise SetupError("a worker died during the run")
                if cfg.progress and elapsed >= next_line:
                    next_line += 1.0
                    log(self.progress_line(elapsed, end))
                await asyncio.sleep(0.02)
        self.load_ended = time.monotonic()

    async def post_broadcast(self, http: aiohttp.ClientSession, n: int) -> None:
        assert self.seeded is not None
        marker = f"lt-bc-{self.run_id}-{n}"
        url = self.cfg.url[0].rstrip("/") + "/admin/broadcast"
        body = {
            "merchant": self.seeded.merchant,
            "kind": "loadtest",
            "notice": marker,
            "payload": {"marker": marker},
        }
        headers = {"Authorization": f"Bearer {self.cfg.resolved_admin_token()}"}
        sent = time.monotonic_ns()
        try:
            async with asyncio.timeout(10):
                async with http.post(url, json=body, headers=headers) as resp:
                    status = resp.status
                    text = (await resp.text())[:200]
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.broadcasts.append({"marker": marker, "sent_ns": sent, "error": repr(exc)})
            return
        replied = time.monotonic_ns()
        if status in (404, 405):
            self.broadcast_supported = False
            log(f"broadcast: {url} answered {status}: unsupported by this deployment")
            return
        self.broadcast_supported = status < 300
        self.broadcasts.append(
            {
                "marker": marker,
                "sent_ns": sent,
                "reply_ms": (replied - sent) / 1e6,
                "status": status,
                "body": text,
            }
        )

    def progress_line(self, elapsed: float, end: float) -> str:
        tot: Counter[str] = Counter()
        p99: dict[str, float] = {}
        for w in self.workers:
            for k, v in w.progress.items():
                if k.endswith("_p99_ms"):
                    p99[k] = max(p99.get(k, 0.0), v)
                elif isinstance(v, int | float):
                    tot[k] += v
        rate = tot["scheduled"] / elapsed if elapsed else 0
        parts = [
            f"[{elapsed:4.0f}s/{end:.0f}s] {self.cfg.scenario}",
            f"flows {tot['scheduled']} ({rate:.0f}/s) ok {tot['flows_ok']}",
            f"err {tot['errors_total']} late {tot['late']} drop {tot['dropped']} inflight {tot['inflight']}",
            f"sessions {tot['connected']}",
            f"pushes {tot['pushes']}",
        ]
        if "flow_p99_ms" in p99:
            parts.append(f"flow p99 {p99['flow_p99_ms']:.1f}ms")
        if "push_p99_ms" in p99:
            parts.append(f"push p99 {p99['push_p99_ms']:.1f}ms")
        if tot["reconnects"]:
            parts.append(f"reconnects {tot['reconnects']}")
        return " | ".join(parts)

    async def finish(self, rounds: int = 3) -> None:
        """Stop the load, then settle: send each worker the ledger's versions of its members,
        let its sessions catch up (bounded by --quiesce), collect results. If the ledger moved
        meanwhile (commands that timed out on the client still applying), go again."""
        self.broadcast(-1, "finish")
        await self.wait_for("drained", self.cfg.timeout + 30)
        assert self.seeded is not None
        # commands the client gave up on may still be applying: wait for the ledger to stop
        deadline = time.monotonic() + self.cfg.quiesce + self.cfg.timeout
        versions = await self.ledger_versions(self.seeded.members)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            now = await self.ledger_versions(self.seeded.members)
            if now == versions:
                break
            versions = now
        for attempt in range(rounds):
            if attempt:
                versions = await self.ledger_versions(self.seeded.members)
            for w in self.workers:
                w.result = None
                with contextlib.suppress(BrokenPipeError, OSError):
                    w.conn.send(("targets", {m: versions[m] for m in w.members if m in versions}))
            await self.wait_for("result", self.cfg.quiesce + 30)
            if attempt == rounds - 1 or await self.ledger_versions(self.seeded.members) == versions:
                return

    async def ledger_versions(self, members: list[str]) -> dict[str, int]:
        if self.cfg.database_url:
            ledger, _ = await vd.ledger_from_db(self.cfg.database_url, members, invariants=False)
        else:
            ledger = await self.ledger_via_gateway(members)
        return {m: row[2] for m, row in ledger.items()}

    async def stop(self) -> None:
        self.broadcast(-1, "stop")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(w.proc.is_alive() for w in self.workers):
            self.poll()
            await asyncio.sleep(0.05)
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            w.conn.close()

    # ------------------------------------------------------------------ results
    async def report(self) -> dict[str, Any]:
        cfg = self.cfg
        hist = Histograms()
        counters: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        seen: list[tuple[str, str, tuple[int, int, int, int]]] = []
        last_replies: dict[str, tuple[int, int, int, int]] = {}
        receipts: dict[str, list[int]] = {}
        notes: set[str] = set()
        for w in self.workers:
            r = w.result or {}
            hist.merge(r.get("histograms", {}))
            counters.update(r.get("counters", {}))
            counters["clamped"] += r.get("clamped", 0)
            counters["unmatched_pushes"] += r.get("unmatched_pushes", 0)
            counters["undigested_frames"] += r.get("undigested_frames", 0)
            notes.update(r.get("link_failures", []))
            errors.update(r.get("errors", {}))
            seen.extend((s, m, tuple(v)) for s, m, v in r.get("seen", []))  # type: ignore[misc]
            last_replies.update(r.get("last_replies", {}))
            for marker, ts in r.get("broadcast", {}).items():
                receipts.setdefault(marker, []).extend(ts)
        for key in ("scheduled", "late", "dropped", "errors_total", "commands_sent"):
            counters.setdefault(key, 0)
        seconds = (
            max(1e-9, self.load_ended - self.load_started) if self.load_ended else cfg.load_seconds
        )
        load_s = cfg.load_seconds or seconds
        # The flows' steps and the pushes leave the warmup out: their rates are over the
        # recorded window; the rest (connects, reconnects, resubscribes) over the whole load.
        latency = {
            name: hist.summary(
                name, load_s if name in _FROM_START else max(1e-9, load_s - cfg.warmup)
            )
            for name in sorted(hist.h)
        }
        bc = self.broadcast_report(receipts, hist)
        if bc.get("deliveries"):
            latency["broadcast"] = hist.summary("broadcast")
        for s in cfg.slo:  # percentiles outside the standard set, computed from the merge
            slo = parse_slo(s)
            if (
                slo.stat.startswith("p")
                and slo.metric in hist.h
                and f"{slo.stat}_ms" not in latency[slo.metric]
            ):
                latency[slo.metric][f"{slo.stat}_ms"] = round(
                    hist.h[slo.metric].get_value_at_percentile(float(slo.stat[1:])) / 1000, 3
                )
        checks = await self.checks(seen, last_replies, counters)
        report: dict[str, Any] = {
            "scenario": cfg.scenario,
            "run": self.run_id,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": cfg.to_dict(),
            "merchant": self.seeded.merchant if self.seeded else None,
            "workers": len(self.workers),
            "duration_s": round(seconds, 3),
            "offered_rate_per_s": round(counters["scheduled"] / load_s, 1) if load_s else 0,
            "throughput": {
                "flows_per_s": round(counters["flows_ok"] / load_s, 1) if load_s else 0,
                "commands_per_s": round(counters["commands_ok"] / load_s, 1) if load_s else 0,
                "pushes_per_s": round(counters["pushes"] / load_s, 1) if load_s else 0,
            },
            "latency": latency,
            "counters": dict(counters),
            "errors": dict(sorted(errors.items())),
            "connections": {
                "sessions_asked": cfg.sessions,
                "sessions_held": sum((w.ready or {}).get("watchers", 0) for w in self.workers),
                "sessions_open_at_end": sum(
                    (w.result or {}).get("watchers_open", 0) for w in self.workers
                ),
                "terminals": sum((w.ready or {}).get("terminals", 0) for w in self.workers),
            },
            "broadcast": bc,
            "client_notes": sorted(notes)[:10],
            "preflight": self.preflight.as_dict() if self.preflight else None,
            "verdict": vd.verdict(checks),
        }
        report["slo"] = evaluate([parse_slo(s) for s in cfg.slo], report)
        report["exit_code"], report["status"] = self.exit_code(report)
        return report

    def broadcast_report(self, receipts: dict[str, list[int]], hist: Histograms) -> dict[str, Any]:
        if self.cfg.broadcast_count <= 0:
            return {}
        if self.broadcast_supported is False:
            return {"supported": False, "detail": "POST /admin/broadcast answered 404/405"}
        held = sum((w.ready or {}).get("watchers", 0) for w in self.workers)
        rounds = []
        for b in self.broadcasts:
            ts = receipts.get(b["marker"], [])
            for t in ts:
                hist.record_ns("broadcast", t - b["sent_ns"])
            rounds.append(
                {
                    "marker": b["marker"],
                    "status": b.get("status"),
                    "error": b.get("error"),
                    "reply_ms": b.get("reply_ms"),
                    "received": len(ts),
                    "sessions": held,
                    "last_receipt_ms": round((max(ts) - b["sent_ns"]) / 1e6, 3) if ts else None,
                }
            )
        lasts = sorted(r["last_receipt_ms"] for r in rounds if r["last_receipt_ms"] is not None)
        return {
            "supported": self.broadcast_supported,
            "rounds": rounds,
            "deliveries": sum(r["received"] for r in rounds),
            "complete_rounds": sum(1 for r in rounds if r["received"] >= held),
            "last_receipt_ms": lasts[len(lasts) // 2] if lasts else None,
            "last_receipt_max_ms": lasts[-1] if lasts else None,
        }

    async def checks(
        self,
        seen: list[tuple[str, str, tuple[int, int, int, int]]],
        last_replies: dict[str, tuple[int, int, int, int]],
        counters: Counter[str],
    ) -> list[vd.Check]:
        assert self.seeded is not None
        members = sorted({m for _, m, _ in seen} | set(last_replies))
        checks: list[vd.Check] = []
        ledger: dict[str, vd.LedgerRow] = {}
        violations: list[dict[str, Any]] | None = None
        if members:
            if self.cfg.database_url:
                ledger, violations = await vd.ledger_from_db(self.cfg.database_url, members)
            else:
                ledger = await self.ledger_via_gateway(members)
        checks.append(vd.check_sessions(seen, ledger))
        checks.append(vd.check_replies(last_replies, ledger))
        checks.append(
            vd.check_gaps(counters["gaps"], counters["gaps_recovered"], counters["gaps_resynced"])
        )
        checks.append(
            vd.check_resume(
                counters["resumes"],
                counters["resumes_recovered"],
                counters["resumes_not_recovered"],
                counters["resumes_broken"],
            )
        )
        if violations is not None:
            checks.append(
                vd.check_ledger(
                    [{k: str(v) for k, v in r.items()} for r in violations], len(members)
                )
            )
        elif members:
            checks.append(
                vd.Check(
                    "ledger",
                    True,
                    "not checked: no --database-url (balances read through the gateway)",
                )
            )
        return checks

    async def ledger_via_gateway(self, members: list[str]) -> dict[str, vd.LedgerRow]:
        from loadtests.client import Link
        from loadtests.seed import pos_token
        from protocol.client import Reply
        from protocol.messages import Balance, GetBalance

        assert self.seeded is not None
        out: dict[str, vd.LedgerRow] = {}
        async with aiohttp.ClientSession() as http:
            link = Link(http, self.cfg.url[0], f"verdict{self.run_id}")
            await link.connect(
                pos_token(self.cfg.resolved_secret(), self.seeded.merchant, "verdict", "verdict"),
                self.cfg.timeout,
            )
            try:
                for i in range(0, len(members), 50):
                    chunk = members[i : i + 50]
                    frames = [GetBalance(id=link.proto.next_id(), member=m) for m in chunk]
                    res = await asyncio.gather(*(link.request(f, self.cfg.timeout) for f in frames))
                    for (ev, _), m in zip(res, chunk, strict=True):
                        if isinstance(ev, Reply) and isinstance(ev.data, Balance):
                            out[m] = (ev.data.posted, ev.data.held, ev.data.version)
            finally:
                await link.close()
        return out

    def exit_code(self, report: dict[str, Any]) -> tuple[int, str]:
        c = report["counters"]
        if (
            self.cfg.broadcast_count > 0
            and self.broadcast_supported is False
            and self.cfg.scenario == "broadcast"
        ):
            return EXIT_UNSUPPORTED, "unsupported"
        if not report["verdict"]["ok"]:
            return EXIT_ERRORS, "incorrect"
        attempted = (
            c.get("commands_sent", 0) + c.get("dropped", 0) + c.get("reconnects_attempted", 0)
        )
        bad = c.get("errors_total", 0) + c.get("dropped", 0)
        if bad and (not attempted or bad / attempted > self.cfg.max_error_rate):
            return EXIT_ERRORS, "errors"
        conn_errors = sum(
            v for k, v in report["errors"].items() if k.startswith(("connect:", "close:"))
        )
        if (
            report["connections"]["sessions_asked"]
            and conn_errors > self.cfg.max_error_rate * report["connections"]["sessions_asked"]
        ):
            return EXIT_ERRORS, "errors"
        if any(not s["ok"] for s in report["slo"]):
            return EXIT_SLO, "slo_breached"
        return EXIT_OK, "pass"


async def execute(cfg: Config) -> dict[str, Any]:
    """Run one scenario end to end; returns the report (with ``exit_code``)."""
    run = Run(cfg)
    try:
        await run.prepare()
        run.start_workers()
        await run.wait_for("ready", run.setup_timeout())
        await run.run_load()
        await run.finish()
        return await run.report()
    finally:
        await run.stop()
