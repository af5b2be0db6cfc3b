"""The sale's added latency with targeted offers (not part of ``make bench``):
``python -m loadtests.offers_bench [--sales 400] [--offers 20]``.

A scratch database and one node (``loadtests.nodes``); one POS session, one member, sales one at
a time (20 of warm-up first). Stage ``none``: no offer exists. Then ``--offers`` live offers are
created, each listing the member (``fixed_bonus``, no limit), and two interleaved modes run:
``plain`` (a sale that presents none: the sale path reads no offer) and ``presenting`` (a sale
that presents one of them, in turn: the claim's transaction, its row lock, the use and the
attachment). Prints each mode's reply p50/p99 (ms), the speed probe read before each stage, and
the ratios to ``none``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from loadtests.nodes import Scratch, cluster
from loadtests.speed import probe_ms
from loadtests.timed import TimedRequests

ADMIN = {"Authorization": "Bearer dev-admin-token"}


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


async def run(admin_dsn: str, redis_url: str, sales: int, offers: int) -> dict[str, Any]:
    from gateway import auth
    from gateway.programme import create_merchant
    from gateway.settings import DEV_JWT_SECRET

    scratch = Scratch(admin_dsn, redis_url)
    await scratch.create()
    merchant = "offersbench"
    out: dict[str, Any] = {"sales": sales, "offers": offers}
    try:
        import asyncpg

        conn = await asyncpg.connect(scratch.dsn)
        await create_merchant(conn, merchant)
        await conn.execute(
            "INSERT INTO programmes (merchant_id, region) VALUES ($1, 'US')", merchant
        )
        await conn.close()
        async with (
            cluster(scratch, 1) as nodes,
            aiohttp.ClientSession() as http,
            http.ws_connect(nodes[0].url.replace("http", "ws") + "/ws") as ws,
        ):
            url = nodes[0].url
            request = TimedRequests(ws)

            token = auth.mint_pos(DEV_JWT_SECRET, merchant, "s1", "bench", 3600)
            _, hello = await request({"type": "hello", "versions": [1], "token": token})
            assert hello["type"] == "welcome", hello
            _, enrolled = await request({"type": "enrol", "email": "bench@example.org"})
            assert enrolled.get("type") == "result", enrolled
            member = enrolled["data"]["member"]

            async def sale(present: list[str]) -> float:
                frame: dict[str, Any] = {
                    "type": "sale",
                    "op": f"b-{uuid.uuid4().hex}",
                    "member": member,
                    "total": 1_500,
                    "lines": [{"sku": "A", "qty": 1, "price": 1_500}],
                }
                if present:
                    frame["offers"] = present
                ms, reply = await request(frame)
                assert reply.get("type") == "result", reply
                return ms

            times: dict[str, list[float]] = {"none": [], "plain": [], "presenting": []}
            probes: dict[str, float] = {}
            for _ in range(20):
                await sale([])
            probes["none"] = probe_ms()
            for _ in range(sales):
                times["none"].append(await sale([]))
            now = datetime.now(UTC)
            for i in range(offers):
                body = {
                    "kind": "fixed_bonus",
                    "points": 5,
                    "members": [member],
                    "starts_at": (now - timedelta(hours=1)).isoformat(),
                    "ends_at": (now + timedelta(days=1)).isoformat(),
                }
                async with http.put(
                    f"{url}/admin/v1/merchants/{merchant}/offers/o{i}", json=body, headers=ADMIN
                ) as r:
                    assert r.status == 200, await r.text()
            for i in range(20):
                await sale([f"o{i % offers}"])
            probes["with_offers"] = probe_ms()
            for i in range(2 * sales):
                if i % 2:
                    times["presenting"].append(await sale([f"o{i % offers}"]))
                else:
                    times["plain"].append(await sale([]))
    finally:
        await scratch.drop()
    for k, v in times.items():
        out[k] = {
            "p50_ms": _pct(v, 0.5),
            "p99_ms": _pct(v, 0.99),
            "mean_ms": round(statistics.mean(v), 3),
        }
    base = out["none"]["p50_ms"]
    out["p50_ratio_to_none"] = {
        k: round(out[k]["p50_ms"] / base, 3) for k in ("plain", "presenting")
    }
    out["probe_ms"] = probes
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.offers_bench", description=__doc__)
    p.add_argument("--sales", type=int, default=400, help="sales per mode")
    p.add_argument("--offers", type=int, default=20, help="live offers listing the member")
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    a = p.parse_args(argv)
    out = {"at": datetime.now(UTC).isoformat(timespec="seconds")}
    out.update(asyncio.run(run(a.database_url, a.redis_url, a.sales, a.offers)))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
