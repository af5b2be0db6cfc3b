"""Segments, measured (``python -m loadtests.segments_bench``):

* ``recompute``: a seeded synthetic merchant of ``--members`` members with a year of history
  each (``--visits`` sales a year, each a day row of totals, channel, category, brand and SKU,
  written set-based as the aggregates keep them), 20 segment definitions (the worked example,
  RFM, windows, channel mix, tier, points, consent, birthday month), then a full recompute of
  the 20 through ``Segments.recompute`` (the node's code path: batches of 500 under the
  members' locks, membership written, changes XADDed to the stream): the first pass (everyone
  enters) and a second (nobody moves: evaluation only). Members/s, extrapolated to 1,000,000.
* ``sales``: one node, open-loop sales (``python -m loadtests checkout --steps sale``) at
  ``--rate`` for ``--seconds``, rounds alternating without and with 20 segments on the
  merchant, the sale reply's p50/p99 of each round; the speed probe before each.

Figures in a scratch database and Redis prefix, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from loadtests.nodes import Scratch, cluster
from loadtests.speed import probe_ms

ADMIN = {"Authorization": "Bearer " + (os.environ.get("GATEWAY_ADMIN_TOKEN") or "dev-admin-token")}

#: The 20 definitions (the first is docs/loyalty.md's worked example).
SEGMENTS: dict[str, dict[str, Any]] = {
    "kitchen-enthusiast": {
        "type": "all",
        "conditions": [
            {"type": "spend", "min": 30_000, "within_days": 365},
            {"type": "bought", "of": "category", "key": "kitchen", "min": 3, "within_days": 180},
            {"type": "consent", "channel": "email"},
        ],
    },
    "champions": {
        "type": "all",
        "conditions": [
            {"type": "rfm", "score": "recency", "min": 4},
            {"type": "rfm", "score": "frequency", "min": 4},
            {"type": "rfm", "score": "monetary", "min": 4},
        ],
    },
    "at-risk": {
        "type": "all",
        "conditions": [
            {"type": "rfm", "score": "recency", "max": 2},
            {"type": "rfm", "score": "monetary", "min": 4},
        ],
    },
    "lapsed-90": {"type": "recency", "min_days": 90},
    "recent-30": {"type": "recency", "max_days": 30},
    "big-spenders": {"type": "spend", "min": 60_000, "within_days": 365},
    "frequent": {"type": "visits", "min": 10, "within_days": 365},
    "omnichannel": {"type": "channels", "online": True, "in_store": True, "within_days": 365},
    "online-only": {"type": "channels", "online": True, "in_store": False},
    "acme-fans": {"type": "bought", "of": "brand", "key": "b1", "min": 2, "within_days": 365},
    "garden-90": {"type": "bought", "of": "category", "key": "garden", "within_days": 90},
    "sku-7-buyers": {"type": "bought", "of": "sku", "key": "sku7", "measure": "visits", "min": 2},
    "gold": {"type": "tier", "in": ["gold"]},
    "silver-or-gold": {"type": "tier", "in": ["silver", "gold"]},
    "rich-in-points": {"type": "points", "min": 5_000},
    "birthday-month": {"type": "birthday_month"},
    "sms-ok": {"type": "consent", "channel": "sms"},
    "store-s1": {"type": "attribute", "name": "preferred_store", "in": ["s1"]},
    "mailable-not-gold": {
        "type": "all",
        "conditions": [
            {"type": "consent", "channel": "email"},
            {"type": "not", "condition": {"type": "tier", "in": ["gold"]}},
        ],
    },
    "any-kitchen-or-garden": {
        "type": "any",
        "conditions": [
            {"type": "bought", "of": "category", "key": "kitchen", "min": 2, "within_days": 365},
            {"type": "bought", "of": "category", "key": "garden", "min": 2, "within_days": 365},
        ],
    },
}
CATEGORIES = ["kitchen", "garden", "toys", "books", "tools", "bath", "food", "sport"]


async def seed_history(dsn: str, merchant: str, members: int, visits: int) -> float:
    """The merchant, its members (profiles, accounts) and a year of day rows each."""
    import asyncpg

    from gateway.aggregates import day_of
    from gateway.programme import create_merchant

    t0 = time.perf_counter()
    today = day_of(datetime.now(UTC))
    conn = await asyncpg.connect(dsn)
    try:
        await create_merchant(conn, merchant, "segments bench", points_per_unit=1)
        await conn.execute(
            """INSERT INTO members (id, merchant_id) SELECT 'sb' || lpad(g::text, 8, '0'), $1
                 FROM generate_series(1, $2) g""",
            merchant,
            members,
        )
        await conn.execute(
            """INSERT INTO member_profiles (member_id, merchant_id, tier, consent_email,
                       consent_sms, birth_month, birth_day, preferred_store)
               SELECT 'sb' || lpad(g::text, 8, '0'), $1,
                      (ARRAY['', '', 'silver', 'gold'])[1 + g % 4], g % 3 = 0, g % 5 = 0,
                      1 + g % 12, 1, 's' || (g % 7)
                 FROM generate_series(1, $2) g""",
            merchant,
            members,
        )
        await conn.execute(
            """INSERT INTO accounts (member_id, merchant_id, posted, held, version)
               SELECT 'sb' || lpad(g::text, 8, '0'), $1, (g * 7919) % 10000, 0, 1
                 FROM generate_series(1, $2) g""",
            merchant,
            members,
        )
        # visit v of member g: on a day of its own month-long slot of the last year, through
        # the web one time in four, one line of a category, a brand and a SKU
        await conn.execute(
            f"""INSERT INTO member_purchase_days
                    (member_id, dim, key, day, merchant_id, units, spend, visits)
                SELECT 'sb' || lpad(g::text, 8, '0'), d.dim, d.key,
                       $3 - (v - 1) * (365 / $4) - ((g * 31 + v * 17) % (365 / $4)),
                       $1, 1 + (g + v) % 3, 500 + ((g * 131 + v * 71) % 9500), 1
                  FROM generate_series(1, $2) g,
                       generate_series(1, $4) v,
                       LATERAL (VALUES
                         ('t', ''),
                         ('h', CASE WHEN (g + v) % 4 = 0 THEN 'web' ELSE 'pos' END),
                         ('c', (ARRAY{CATEGORIES!r})[1 + (g * 7 + v * 3) % {len(CATEGORIES)}]),
                         ('b', 'b' || ((g + v * 5) % 10)),
                         ('s', 'sku' || ((g * 3 + v * 11) % 50))
                       ) AS d(dim, key)
                  WHERE (g + v) % 5 <> 0 OR v <= 2""",
            merchant,
            members,
            today,
            visits,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def recompute_stage(
    admin_dsn: str, redis_url: str, members: int, visits: int
) -> dict[str, Any]:
    import asyncpg

    from gateway.segments import Segments, SegmentStream, parse
    from gateway.store.keys import Keys
    from gateway.store.redis import create_client

    scratch = Scratch(admin_dsn, redis_url)
    await scratch.create()
    try:
        merchant = "segbench"
        probe_before = probe_ms()
        seeded = await seed_history(scratch.dsn, merchant, members, visits)
        pool = await asyncpg.create_pool(scratch.dsn, min_size=2, max_size=4)
        redis = create_client(redis_url)
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetchval("SELECT count(*) FROM member_purchase_days")
            segments = Segments(pool, (SegmentStream(redis, Keys(scratch.prefix)),))

            for sid, cond in SEGMENTS.items():
                cond_ = parse(json.dumps(cond).encode())
                await segments.put(merchant, sid, sid, cond_, recompute=False)
            probe_mid = probe_ms()
            first = await segments.recompute(merchant)
            second = await segments.recompute(merchant)
            async with pool.acquire() as conn:
                found = await conn.fetch(
                    """SELECT segment_id, count(*) FROM segment_members
                        WHERE merchant_id = $1 GROUP BY 1 ORDER BY 1""",
                    merchant,
                )
            sizes: dict[str, int] = {r[0]: r[1] for r in found}
        finally:
            await redis.aclose()
            await pool.close()
        return {
            "members": members,
            "visits_per_member": visits,
            "day_rows": rows,
            "seed_seconds": round(seeded, 1),
            "probe_ms": [probe_before, probe_mid, probe_ms()],
            "first_pass": {
                "seconds": round(first.seconds, 2),
                "entered": first.entered,
                "members_per_s": round(members / first.seconds),
            },
            "second_pass": {
                "seconds": round(second.seconds, 2),
                "moved": second.entered + second.left,
                "members_per_s": round(members / second.seconds),
            },
            "extrapolated_1m_seconds": round(1_000_000 / (members / second.seconds)),
            "sizes": sizes,
        }
    finally:
        await scratch.drop()


def _checkout(
    url: str, dsn: str, merchant: str, rate: int, seconds: int, out: str
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "loadtests",
        "checkout",
        "--url",
        url,
        "--database-url",
        dsn,
        "--merchant",
        merchant,
        "--members",
        "2000",
        "--steps",
        "sale",
        "--rate",
        str(rate),
        "--duration",
        str(seconds),
        "--warmup",
        "5",
        "--json",
        out,
        "--out",
        "",
    ]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        report: dict[str, Any] = json.load(f)
    return report


async def sales_stage(
    admin_dsn: str, redis_url: str, rate: int, seconds: int, rounds: int
) -> dict[str, Any]:
    from loadtests.seed import seed

    scratch = Scratch(admin_dsn, redis_url)
    await scratch.create()
    results: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    try:
        merchant = "segsales"
        await seed(scratch.dsn, 2000, merchant=merchant, migrate=False)
        async with cluster(scratch, 1) as nodes, aiohttp.ClientSession() as http:
            url = nodes[0].url
            base = f"{url}/admin/v1/merchants/{merchant}/segments"
            for i in range(rounds * 2):
                mode = "without" if i % 2 == 0 else "with"
                for sid, cond in SEGMENTS.items():
                    if mode == "with":
                        async with http.put(
                            f"{base}/{sid}", json={"condition": cond}, headers=ADMIN
                        ) as r:
                            assert r.status == 200, await r.text()
                    else:
                        async with http.delete(f"{base}/{sid}", headers=ADMIN) as r:
                            assert r.status in (200, 404)
                await asyncio.sleep(3)  # the definitions' pass and every node's copy
                probe = probe_ms()
                report = await asyncio.to_thread(
                    _checkout, url, scratch.dsn, merchant, rate, seconds, f"/tmp/segsales-{i}.json"
                )
                sale = report["latency"]["sale"]
                results[mode].append(
                    {
                        "probe_ms": probe,
                        "p50_ms": sale.get("p50_ms"),
                        "p99_ms": sale.get("p99_ms"),
                        "count": sale.get("count"),
                        "errors": report["counters"].get("errors_total", 0),
                        "late": report["counters"].get("late", 0),
                    }
                )
                print(mode, results[mode][-1], flush=True)
    finally:
        await scratch.drop()
    p99 = {k: statistics.median(r["p99_ms"] for r in v) for k, v in results.items() if v}
    return {
        "rate": rate,
        "seconds": seconds,
        "rounds": results,
        "median_p99_ms": p99,
        "added_p99_ms": round(p99["with"] - p99["without"], 2) if len(p99) == 2 else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.segments_bench",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--stages", default="recompute,sales")
    p.add_argument("--members", type=int, default=100_000, help="members of the recompute stage")
    p.add_argument("--visits", type=int, default=12, help="sales a year per member")
    p.add_argument("--rate", type=int, default=1000, help="sales/s of the sales stage")
    p.add_argument("--seconds", type=int, default=20, help="seconds of load per sales round")
    p.add_argument("--rounds", type=int, default=2, help="rounds without and with segments")
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    a = p.parse_args(argv)
    out: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds")}
    stages = a.stages.split(",")
    if "recompute" in stages:
        out["recompute"] = asyncio.run(
            recompute_stage(a.database_url, a.redis_url, a.members, a.visits)
        )
        print(json.dumps(out["recompute"], indent=1), flush=True)
    if "sales" in stages:
        out["sales"] = asyncio.run(
            sales_stage(a.database_url, a.redis_url, a.rate, a.seconds, a.rounds)
        )
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
