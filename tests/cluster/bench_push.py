"""Cross-node push latency, Redis Cluster against single Redis, in one run:
``python -m tests.cluster.bench_push [--sales 400] [--rounds 2]``.

For each configuration two gateway processes (``python -m gateway serve``) share a fresh
database: a POS on node A posts sales one after another, each for the next of 8 members; a POS
on node B watches all 8. A push's latency is its receipt on B minus the receipt of the sale's
reply on A (the loadtests' ``push``; negative when the push wins). The cluster is a private
3 masters + 3 replicas (``tests.servers.PrivateRedisCluster``, GATEWAY_REDIS_SHARDS=4), the
single Redis a private redis-server; the rounds alternate so machine drift hits both. Prints
the speed probe (``loadtests.speed``) before each round, then p50/p99 per configuration and
their ratios."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aiohttp

from loadtests.speed import probe_ms
from protocol.messages import BalanceChanged, Result
from tests.conftest import create_database, drop_database
from tests.live_support import make_world, pos, sale
from tests.servers import PrivateRedis, PrivateRedisCluster
from tests.support import NodeProcess


async def one_round(pg_dsn: str, redis_url: str, env: dict[str, str], sales: int) -> list[float]:
    world = await make_world(pg_dsn, members=8)
    prefix = f"bp{uuid.uuid4().hex[:6]}"
    nodes = [NodeProcess(pg_dsn, redis_url, prefix, n, env) for n in ("pa", "pb")]
    try:
        await asyncio.gather(*(n.wait_ready(30) for n in nodes))
        async with aiohttp.ClientSession() as http:
            till = await pos(http, nodes[0].url, world["merchant"])
            watcher = await pos(http, nodes[1].url, world["merchant"], "t-watch")
            for m in world["members"]:
                await watcher.request({"type": "subscribe", "member": m})
            for i in range(20):  # warm up: epochs learned, scripts loaded, feeds open
                await sale(till, world["members"][i % 8])
            while not watcher.pushes.empty():
                watcher.pushes.get_nowait()
            lat: list[float] = []
            for i in range(sales):
                m = world["members"][i % 8]
                r = await sale(till, m)
                replied = time.perf_counter()
                assert isinstance(r, Result)
                while True:
                    f = await asyncio.wait_for(watcher.pushes.get(), 5)
                    if isinstance(f, BalanceChanged) and f.version == r.data.balance.version:
                        break
                lat.append((time.perf_counter() - replied) * 1000)
            await till.close()
            await watcher.close()
        return lat
    finally:
        for n in nodes:
            n.kill()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sales", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    name = f"lg_bench_{uuid.uuid4().hex[:8]}"
    dsn = await create_database(name)
    cluster, single = PrivateRedisCluster(), PrivateRedis()
    try:
        cluster.start()
        single.start()
        got: dict[str, list[float]] = {"single": [], "cluster": []}
        for r in range(a.rounds):
            for kind in ("single", "cluster") if r % 2 == 0 else ("cluster", "single"):
                print(f"round {r} {kind}: probe {probe_ms()} ms", flush=True)
                if kind == "single":
                    got[kind] += await one_round(dsn, single.url, {}, a.sales)
                else:
                    env = {"GATEWAY_REDIS_CLUSTER": "1", "GATEWAY_REDIS_SHARDS": "4"}
                    got[kind] += await one_round(dsn, cluster.url, env, a.sales)
        for kind, xs in got.items():
            print(
                f"{kind}: n={len(xs)} p50={pct(xs, 0.5):.2f} ms p99={pct(xs, 0.99):.2f} ms "
                f"mean={statistics.mean(xs):.2f} ms"
            )
        s, c = got["single"], got["cluster"]
        print(
            f"cluster/single: p50 x{pct(c, 0.5) / pct(s, 0.5):.2f}, "
            f"p99 x{pct(c, 0.99) / pct(s, 0.99):.2f}"
        )
    finally:
        cluster.stop()
        single.stop()
        await drop_database(name)


if __name__ == "__main__":
    asyncio.run(main())
