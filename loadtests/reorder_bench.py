"""``python -m loadtests.reorder_bench``: what the reorder loops cost the sale path, and how
fast the predictions are recomputed, on one local node over a scratch database.

- **Sale latency**: ``--sales`` sales of ``--lines`` lines of replenishable products, one at a
  time on one POS session, in ``--rounds`` rounds alternating the sales trigger off
  (``ALTER TABLE sales DISABLE TRIGGER reorder_sales_inserted``: nothing queued) and on (the
  batch's members queued in the sale's transaction), the node's reorder job running every
  second both times; each round's reply p50 and p99 with the speed probe read before it, and
  the difference of the medians of the p99s.
- **Prediction rate**: ``--members`` members with ``--visits`` sales each of one
  replenishable product over a year, written set-based (the trigger queues them), then one
  ``Predictor.run`` in this process, timed: members/s and its extrapolation to 1,000,000.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg

from loadtests.catalogue import _pct
from loadtests.nodes import Node, Scratch
from loadtests.report import emit
from loadtests.speed import probe_ms, spread
from loadtests.timed import TimedRequests


async def _products(dsn: str, merchant: str, n: int = 50) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO catalogue_products (merchant_id, sku, name, price, replenishable,
                                               cycle_days)
               SELECT $1, 'R-' || i, 'Product ' || i, 500, true, 30
                 FROM generate_series(0, $2 - 1) AS i""",
            merchant,
            n,
        )
    finally:
        await conn.close()


async def _trigger(dsn: str, on: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        verb = "ENABLE" if on else "DISABLE"
        await conn.execute(f"ALTER TABLE sales {verb} TRIGGER reorder_sales_inserted")
    finally:
        await conn.close()


async def _round(url: str, merchant: str, members: list[str], n: int, lines: int) -> list[float]:
    import aiohttp

    from gateway import auth
    from gateway.settings import DEV_JWT_SECRET

    token = auth.mint_pos(DEV_JWT_SECRET, merchant, "s1", "bench", 3600)
    times: list[float] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url.replace("http", "ws") + "/ws") as ws,
    ):
        request = TimedRequests(ws)

        _, hello = await request({"type": "hello", "versions": [1], "token": token})
        assert hello["type"] == "welcome", hello
        for i in range(n + 20):  # the first 20: warm-up, not recorded
            items = [{"sku": f"R-{(i + j) % 50}", "qty": 1, "price": 500} for j in range(lines)]
            frame = {
                "type": "sale",
                "op": f"b-{uuid.uuid4().hex}",
                "member": members[i % len(members)],
                "total": 500 * lines,
                "lines": items,
            }
            ms, reply = await request(frame)
            if reply.get("type") != "result":
                raise RuntimeError(f"sale failed: {reply}")
            if i >= 20:
                times.append(ms)
    return times


_HISTORY = """
INSERT INTO sales (merchant_id, op_id, member_id, channel, total, points, breakdown, lines,
                   fingerprint, created_at)
SELECT $1, 'h-' || m || '-' || v, m, 'pos', 500 * (1 + v % 2), 0, '[]'::jsonb,
       jsonb_build_array(jsonb_build_object('sku', 'R-' || (hashtext(m) & 7), 'qty', 1 + v % 2,
                                            'price', 500)),
       '\\x00'::bytea, now() - make_interval(days => 365 - v * (365 / $3) - (hashtext(m) & 15))
  FROM unnest($2::text[]) AS m, generate_series(0, $3 - 1) AS v
"""


async def _predictions(dsn: str, merchant: str, members: list[str], visits: int) -> dict[str, Any]:
    from gateway.reorder import Predictor

    conn = await asyncpg.connect(dsn)
    try:
        t = time.perf_counter()
        for i in range(0, len(members), 5000):
            await conn.execute(_HISTORY, merchant, members[i : i + 5000], visits)
        seeded = time.perf_counter() - t
        queued = await conn.fetchval("SELECT count(*) FROM reorder_events")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        t = time.perf_counter()
        done = await Predictor(pool).run()
        seconds = time.perf_counter() - t
    finally:
        await pool.close()
    return {
        "members": len(members),
        "sales": len(members) * visits,
        "seed_seconds": round(seeded, 2),
        "events": queued,
        "predictions": done.predictions,
        "seconds": round(seconds, 2),
        "members_per_s": round(len(members) / seconds),
        "seconds_per_million": round(1_000_000 / (len(members) / seconds), 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from loadtests.seed import seed

    scratch = Scratch(args.database_url, args.redis_url)
    await scratch.create()
    probes: dict[str, float] = {}
    rounds: list[dict[str, Any]] = []
    try:
        seeded = await seed(scratch.dsn, max(args.members, 100), 0, f"ro-{uuid.uuid4().hex[:6]}")
        await _products(scratch.dsn, seeded.merchant)
        env = {
            "GATEWAY_LEDGER_LANES": "1",
            "GATEWAY_RATE_PER_SECOND": "100000",
            "GATEWAY_REORDER_SECONDS": str(args.worker_seconds),
        }
        node = Node(scratch, "reorder-bench", env)
        try:
            await node.wait_ready()
            for r in range(args.rounds):
                for on in (False, True):
                    await _trigger(scratch.dsn, on)
                    name = f"r{r + 1}-{'on' if on else 'off'}"
                    probes[name] = probe_ms()
                    t = await _round(node.url, seeded.merchant, seeded.members[:100], args.sales,
                                     args.lines)  # fmt: skip
                    rounds.append(
                        {
                            "round": name,
                            "trigger": on,
                            "p50": round(_pct(t, 50), 3),
                            "p99": round(_pct(t, 99), 3),
                        }
                    )
        finally:
            node.stop()
        await _trigger(scratch.dsn, True)
        conn = await asyncpg.connect(scratch.dsn)
        try:
            await conn.execute("DELETE FROM reorder_events")
        finally:
            await conn.close()
        probes["predictions"] = probe_ms()
        predictions = await _predictions(
            scratch.dsn, seeded.merchant, seeded.members[: args.members], args.visits
        )
    finally:
        await scratch.drop()
    off = [x["p99"] for x in rounds if not x["trigger"]]
    on = [x["p99"] for x in rounds if x["trigger"]]
    return {
        "sales_per_round": args.sales,
        "worker_seconds": args.worker_seconds,
        "lines_per_sale": args.lines,
        "rounds": rounds,
        "p99_median_off": statistics.median(off),
        "p99_median_on": statistics.median(on),
        "p99_added_ms": round(statistics.median(on) - statistics.median(off), 3),
        "predictions": predictions,
        "speed_probe_ms": probes,
        "probe_spread": spread(probes),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.reorder_bench")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--sales", type=int, default=500, help="sales timed per round")
    p.add_argument("--lines", type=int, default=3, help="lines per sale")
    p.add_argument("--rounds", type=int, default=3, help="rounds of off then on")
    p.add_argument("--members", type=int, default=20_000, help="members whose predictions run")
    p.add_argument("--visits", type=int, default=6, help="sales per member over the year")
    p.add_argument(
        "--worker-seconds",
        type=float,
        default=1.0,
        help="the node's GATEWAY_REORDER_SECONDS (0: no worker, the trigger's cost alone)",
    )
    p.add_argument("--json", help="also write the figures to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
