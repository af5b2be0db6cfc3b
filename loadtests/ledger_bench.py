"""Ledger benchmark: the durable path's latency and capacity, with same-run baselines.

Measures, on this machine, in one run:

1. reserve->reply and commit->reply latency (p50/p99/p99.9) of the ledger engine at a fixed
   open-loop rate of reserve+commit flows (default 2,000 flows/s = 4,000 ops/s); latency runs
   from each operation's *scheduled* send time to its durable reply (no coordinated omission).
   Each reply is released only after COMMIT (synchronous_commit on) and after the change was
   handed to Redis (cache + pub/sub), exactly as in the gateway.
2. The highest sustained rate of durable ledger operations with p99 <= 50 ms: an open-loop
   ramp in stages; a stage passes when p99 <= 50 ms and at least 97% of the offered operations
   completed within the stage.
3. The pgbench baseline on the same server: one conditional UPDATE of an account row plus one
   ledger INSERT per transaction (16 clients), and the same with 100 of them per transaction.
4. Rebuilding the Redis balance cache for 1,000,000 members from PostgreSQL.

The load generator runs in the engine's process (one Python process, one core's worth of
work), so the figures are for the engine plus its generator sharing the machine with
PostgreSQL and Redis. That process runs as a gateway node does: on uvloop, with the node's
collector policy (``gateway.collector``, the default ``ServerSettings`` intervals).
End-to-end figures through websockets come from the `checkout` scenario.

Run: ``python -m loadtests.ledger_bench [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import uvloop

from gateway.collector import CollectorPolicy
from gateway.fanout import Publisher
from gateway.ledger import Commit, Ledger, Origin, Reserve, rebuild_cache
from gateway.schema import migrate
from gateway.settings import LedgerSettings, ServerSettings
from gateway.store.keys import Keys
from gateway.store.redis import create_client
from loadtests.hist import new as new_histogram

DEFAULT_DB = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/loyalty")
DEFAULT_REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
MERCHANT = "bench"


def _dsn(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


def _pct(h: Any) -> dict[str, float]:
    return {
        "p50_ms": h.get_value_at_percentile(50) / 1000,
        "p99_ms": h.get_value_at_percentile(99) / 1000,
        "p99.9_ms": h.get_value_at_percentile(99.9) / 1000,
        "max_ms": h.get_max_value() / 1000,
        "count": int(h.get_total_count()),
    }


async def _seed(dsn: str, members: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", MERCHANT
        )
        have = await conn.fetchval("SELECT count(*) FROM members")
        if have >= members:
            return
        # Funded members: one earn entry each, so the ledger's invariants hold from the start.
        await conn.execute(
            """
            INSERT INTO members (id, merchant_id)
                 SELECT 'b' || g, $1 FROM generate_series($2::int, $3::int) g;
            """,
            MERCHANT,
            have + 1,
            members,
        )
        await conn.execute(
            """
            INSERT INTO accounts (member_id, merchant_id, posted, held, version)
                 SELECT 'b' || g, $1, 1000000000, 0, 1 FROM generate_series($2::int, $3::int) g;
            """,
            MERCHANT,
            have + 1,
            members,
        )
        await conn.execute(
            """
            INSERT INTO ledger_entries (merchant_id, member_id, version, kind, op_id, contra,
                                        posted_delta, held_delta, posted_after, held_after,
                                        created_at)
                 SELECT $1, 'b' || g, 1, 'earn', 'seed-' || g, 'issuance', 1000000000, 0,
                        1000000000, 0, now()
                   FROM generate_series($2::int, $3::int) g;
            """,
            MERCHANT,
            have + 1,
            members,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


class _Stage:
    def __init__(self) -> None:
        self.reserve = new_histogram()
        self.commit = new_histogram()
        self.offered = 0
        self.done = 0
        self.refused = 0
        self.errors = 0
        #: Flows still unanswered 10 s after the last send (cancelled; counted in ``errors``).
        self.abandoned = 0


async def _open_loop(
    ledger: Ledger, flows_per_s: float, seconds: float, members: int, run_id: str
) -> _Stage:
    """Start reserve+commit flows at a constant rate; each flow's commit is scheduled when its
    reserve replies. Latency is measured from the scheduled time of each operation, on
    ``time.perf_counter`` (uvloop's ``loop.time()`` ticks in whole milliseconds)."""
    stage = _Stage()
    origin = Origin(MERCHANT, "pos", "bench", "t")
    loop = asyncio.get_running_loop()
    rng = random.Random(run_id)
    pending: set[asyncio.Task[None]] = set()
    interval = 1.0 / flows_per_s
    clock = time.perf_counter
    start = clock() + 0.05
    n_total = int(flows_per_s * seconds)

    async def one_flow(i: int, scheduled: float) -> None:
        member = f"b{rng.randrange(1, members + 1)}"
        hold = f"{run_id}-h{i}"
        # Sent up to 0.5 ms early (below that the pacer does not sleep): count from the send.
        since = min(scheduled, clock())
        try:
            out = await ledger.submit(Reserve(hold, member, 1, 60_000, origin))
            t = clock()
            stage.reserve.record_value(max(1, int((t - since) * 1e6)))
            stage.done += 1
            if not out.ok:
                stage.refused += 1
                return
            out = await ledger.submit(Commit(f"{run_id}-c{i}", member, hold, None, origin))
            stage.commit.record_value(max(1, int((clock() - t) * 1e6)))
            stage.done += 1
            if not out.ok:
                stage.refused += 1
        except asyncio.CancelledError:
            stage.errors += 1
            stage.abandoned += 1
            raise
        except Exception:
            stage.errors += 1

    for i in range(n_total):
        scheduled = start + i * interval
        delay = scheduled - clock()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        stage.offered += 2
        task = loop.create_task(one_flow(i, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        _, late = await asyncio.wait(set(pending), timeout=10)
        for t in late:
            t.cancel()
        if late:
            await asyncio.wait(late)  # each counts itself as abandoned
    return stage


async def ledger_figures(dsn: str, redis_url: str, quick: bool, members: int) -> dict[str, Any]:
    redis = create_client(redis_url)  # the node's client
    keys = Keys(f"lgbench{uuid.uuid4().hex[:6]}")
    ledger = Ledger(dsn, LedgerSettings(), Publisher(redis, keys))  # the product's defaults
    await ledger.start()
    server = ServerSettings()
    collector = CollectorPolicy(server.gc_freeze_seconds, server.gc_full_seconds)
    collector.start()
    out: dict[str, Any] = {}
    try:
        # Warm up connections and statement caches, then give the planner statistics of tables
        # that now have rows: measured is the steady state, not a database's first minute.
        await _open_loop(ledger, 500, 2.0, members, f"w{uuid.uuid4().hex[:6]}")
        await _analyze(dsn)
        secs = 5.0 if quick else 10.0
        fixed = await _open_loop(ledger, 2000, secs, members, f"f{uuid.uuid4().hex[:6]}")
        out["fixed_rate"] = {
            "flows_per_s": 2000,
            "ops_per_s": 4000,
            "seconds": secs,
            "reserve": _pct(fixed.reserve),
            "commit": _pct(fixed.commit),
            "errors": fixed.errors,
            "refused": fixed.refused,
            "abandoned": fixed.abandoned,
        }
        ramp = []
        rates = (
            [1000, 2000, 2500, 3000, 4000, 5000]
            if quick
            else [1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000]
        )
        best = 0
        for flows in rates:
            b0, o0 = ledger.stats.batches, ledger.stats.ops
            st = await _open_loop(
                ledger, flows, 3.0 if quick else 5.0, members, f"r{uuid.uuid4().hex[:6]}"
            )
            merged = new_histogram()
            merged.add(st.reserve)
            merged.add(st.commit)
            p99 = merged.get_value_at_percentile(99) / 1000
            completed = st.done / max(1, st.offered)
            batch = (ledger.stats.ops - o0) / max(1, ledger.stats.batches - b0)
            ok = p99 <= 50 and completed >= 0.97 and st.errors == 0
            ramp.append(
                {
                    "ops_per_s": flows * 2,
                    "p50_ms": merged.get_value_at_percentile(50) / 1000,
                    "p99_ms": p99,
                    "completed": round(completed, 4),
                    "mean_batch": round(batch, 1),
                    "pass": ok,
                }
            )
            if ok:
                best = flows * 2
            else:
                break
        out["ramp"] = ramp
        out["max_ops_per_s_p99_50ms"] = best
    finally:
        await collector.close()
        await ledger.close()
        with contextlib.suppress(Exception):
            found = [k async for k in redis.scan_iter(match=f"{keys.prefix}:*", count=5000)]
            for i in range(0, len(found), 5000):
                await redis.unlink(*found[i : i + 5000])
        await redis.aclose()
    return out


_PGBENCH_SINGLE = """\\set aid random(1, {n})
BEGIN;
UPDATE pgb_accounts SET held = held + 1 WHERE id = :aid AND posted - held >= 1;
INSERT INTO pgb_entries (account, delta, at) VALUES (:aid, 1, now());
END;
"""

_PGBENCH_BATCH = """\\set base random(1, {n_minus})
BEGIN;
UPDATE pgb_accounts SET held = held + 1
  FROM generate_series(:base, :base + 99) g WHERE id = g AND posted - held >= 1;
INSERT INTO pgb_entries (account, delta, at) SELECT g, 1, now() FROM generate_series(:base, :base + 99) g;
END;
"""


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


async def pgbench_figures(dsn: str, quick: bool) -> dict[str, Any]:
    exe = shutil.which("pgbench")
    if exe is None:
        return {"error": "pgbench not installed"}
    n = 100_000
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS pgb_accounts, pgb_entries")
        await conn.execute(
            "CREATE TABLE pgb_accounts (id int PRIMARY KEY, posted bigint NOT NULL, "
            "held bigint NOT NULL, CHECK (posted - held >= 0))"
        )
        await conn.execute(
            "CREATE TABLE pgb_entries (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "account int NOT NULL, delta bigint NOT NULL, at timestamptz NOT NULL)"
        )
        await conn.execute(
            "INSERT INTO pgb_accounts SELECT g, 1000000000, 0 FROM generate_series(1, $1) g", n
        )
        await conn.execute("ANALYZE pgb_accounts")
    finally:
        await conn.close()
    secs = 5 if quick else 10
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, script, per_tx in (
            ("single", _PGBENCH_SINGLE.format(n=n), 1),
            ("batch100", _PGBENCH_BATCH.format(n_minus=n - 100), 100),
        ):
            path = os.path.join(tmp, f"{name}.sql")
            await asyncio.to_thread(_write, path, script)
            proc = await asyncio.to_thread(
                subprocess.run,
                [exe, "-n", "-c", "16", "-j", "2", "-T", str(secs), "-f", path, dsn],
                capture_output=True,
                text=True,
            )
            m = re.search(r"tps = ([0-9.]+)", proc.stdout)
            lat = re.search(r"latency average = ([0-9.]+) ms", proc.stdout)
            if m is None:
                results[name] = {"error": proc.stderr.strip()[-300:]}
                continue
            tps = float(m.group(1))
            results[name] = {
                "clients": 16,
                "seconds": secs,
                "tps": round(tps),
                "ops_per_s": round(tps * per_tx),
                "latency_avg_ms": float(lat.group(1)) if lat else None,
            }
    conn = await asyncpg.connect(dsn)
    await conn.execute("DROP TABLE IF EXISTS pgb_accounts, pgb_entries")
    await conn.close()
    return results


async def rebuild_figures(dsn: str, redis_url: str, members: int) -> dict[str, Any]:
    await _seed(dsn, members)
    redis = aioredis.Redis.from_url(redis_url, socket_timeout=60)
    keys = Keys(f"lgrebuild{uuid.uuid4().hex[:6]}")
    try:
        n, seconds = await rebuild_cache(dsn, redis, keys)
        sample = await redis.hgetall(keys.balance("b1"))
        ok = sample.get(b"v") == b"1" or int(sample.get(b"v", b"0")) >= 1
    finally:
        found = 0
        async for k in redis.scan_iter(match=f"{keys.prefix}:*", count=10_000):
            await redis.unlink(k)
            found += 1
        await redis.aclose()
    return {
        "members": n,
        "seconds": round(seconds, 2),
        "per_second": round(n / seconds),
        "spot_check_ok": ok,
    }


async def _analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _checkpoint(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def run_async(
    database_url: str | None = None, redis_url: str | None = None, quick: bool = False
) -> dict[str, Any]:
    base = database_url or DEFAULT_DB
    redis_url = redis_url or DEFAULT_REDIS
    name = f"lg_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_dsn(base, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = _dsn(base, name)
    figures: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": quick,
        "cpus": os.cpu_count(),
    }
    try:
        await _seed(dsn, 10_000)
        # The ledger first: pgbench leaves a lot of WAL behind, and the checkpoint it triggers
        # would land on whatever runs next. A checkpoint before each phase starts them equal.
        await _checkpoint(dsn)
        figures["ledger"] = await ledger_figures(dsn, redis_url, quick, 10_000)
        await _checkpoint(dsn)
        figures["pgbench"] = await pgbench_figures(dsn, quick)
        await _checkpoint(dsn)
        figures["rebuild"] = await rebuild_figures(dsn, redis_url, 100_000 if quick else 1_000_000)
        single = figures["pgbench"].get("single", {}).get("ops_per_s")
        best = figures["ledger"]["max_ops_per_s_p99_50ms"]
        if single:
            figures["ratio_to_pgbench_single"] = round(best / single, 2)
    finally:
        admin = await asyncpg.connect(_dsn(base, "postgres"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return figures


def run(
    database_url: str | None = None, redis_url: str | None = None, quick: bool = False
) -> dict[str, Any]:
    """Run the ledger benchmark; returns the figures (see ``markdown`` for a report)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as a node runs
        return runner.run(run_async(database_url, redis_url, quick))


def markdown(f: dict[str, Any]) -> str:
    lines = [
        f"### Ledger ({'quick' if f['quick'] else 'full'} run, {f['date']}, "
        f"{f['cpus']} cores, everything on one machine)",
        "",
    ]
    fx = f["ledger"]["fixed_rate"]
    lines += [
        f"Open-loop {fx['flows_per_s']} reserve+commit flows/s ({fx['ops_per_s']} durable "
        f"ops/s) for {fx['seconds']:.0f} s, latency from scheduled send to durable reply:",
        "",
        "| operation | p50 | p99 | p99.9 | max | count | target p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in ("reserve", "commit"):
        h = fx[op]
        verdict = "PASS" if h["p99_ms"] <= 10 and not fx.get("errors") else "MISS"
        lines.append(
            f"| {op}→reply | {h['p50_ms']:.2f} ms | {h['p99_ms']:.2f} ms | "
            f"{h['p99.9_ms']:.2f} ms | {h['max_ms']:.1f} ms | {h['count']} | "
            f"≤ 10 ms: {verdict} |"
        )
    lines += [
        "",
        "Ramp (each stage open-loop; pass = p99 ≤ 50 ms and ≥ 97% completed):",
        "",
        "| offered ops/s | p50 | p99 | completed | mean batch | pass |",
        "|---|---|---|---|---|---|",
    ]
    for s in f["ledger"]["ramp"]:
        lines.append(
            f"| {s['ops_per_s']} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms | "
            f"{s['completed']:.1%} | {s['mean_batch']} | {'yes' if s['pass'] else 'no'} |"
        )
    best = f["ledger"]["max_ops_per_s_p99_50ms"]
    pg = f["pgbench"]
    lines += [
        "",
        f"Highest sustained rate with p99 ≤ 50 ms: **{best} ops/s** "
        f"(target ≥ 10,000: {'PASS' if best >= 10_000 else 'MISS'}).",
    ]
    if "single" in pg and "tps" in pg["single"]:
        lines.append(
            f"pgbench baseline, same run: {pg['single']['tps']} tx/s for one conditional "
            f"UPDATE + ledger INSERT per transaction (16 clients); "
            f"{pg.get('batch100', {}).get('ops_per_s', '?')} ops/s with 100 per transaction. "
            f"Ratio of the engine's rate to the single-op baseline: "
            f"**{f.get('ratio_to_pgbench_single', '?')}x**."
        )
    rb = f["rebuild"]
    lines.append(
        f"Redis rebuild from PostgreSQL: {rb['members']} members in {rb['seconds']} s "
        f"({rb['per_second']}/s; target for 1,000,000 ≤ 30 s)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.ledger_bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--database-url")
    p.add_argument("--redis-url")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)
    figures = run(a.database_url, a.redis_url, a.quick)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    sys.stdout.write(markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
