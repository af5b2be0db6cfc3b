"""``python -m loadtests catalogue``: the product catalogue's bulk import and the sale path's
catalogue read, timed against one local node (``python -m gateway serve``) on a scratch
database.

- **Import rows/s**: ``--rows`` generated products (each with a name, a category of 50, a
  brand of 200, a price; every tenth replenishable) put to ``PUT .../catalogue/imports/{id}``
  as one streamed body, from the first byte sent to the final report, for each kind of
  import: ``create`` (JSON lines into an empty catalogue), ``unchanged`` (the same rows again
  under another id: nothing written), ``update`` (every price changed) and ``csv_create``
  (the same rows as CSV into another merchant's empty catalogue). ``--runs`` runs; the
  median is reported with every run's figure.
- **Sale latency**: ``--sales`` sales of ``--lines`` lines each, one at a time on one POS
  session, alternately with lines that name their category (no catalogue read) and lines
  that name none (one catalogue read per sale); the reply times, median and p99, and the
  difference of the medians.

The speed probe (``loadtests/speed.py``) is read before each stage; quote figures with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from loadtests.nodes import Node, Scratch, rss_kb
from loadtests.report import emit
from loadtests.speed import probe_ms, spread
from loadtests.timed import TimedRequests

ADMIN = {"Authorization": "Bearer dev-admin-token"}
#: Bytes of the generated body per chunk sent.
CHUNK = 256 * 1024


def _products(n: int, price_offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        p: dict[str, Any] = {
            "sku": f"SKU-{i:07d}",
            "name": f"Product number {i} of the bench catalogue",
            "category": f"cat-{i % 50}",
            "brand": f"Brand {i % 200}",
            "price": 100 + (i * 37) % 10_000 + price_offset,
        }
        if i % 10 == 0:
            p["replenishable"], p["cycle_days"] = True, 30
        out.append(p)
    return out


def jsonl_body(products: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(p).encode() + b"\n" for p in products)


def csv_body(products: list[dict[str, Any]]) -> bytes:
    cols = ["sku", "name", "category", "brand", "price", "replenishable", "cycle_days"]
    lines = [",".join(cols)]
    for p in products:
        lines.append(",".join(str(p.get(c, "")) for c in cols))
    return ("\n".join(lines) + "\n").encode()


async def _stream(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), CHUNK):
        yield body[i : i + CHUNK]


async def timed_import(
    http: aiohttp.ClientSession, url: str, merchant: str, body: bytes, ctype: str
) -> tuple[float, dict[str, Any]]:
    """Seconds from the first byte to the final report, and the report."""
    target = f"{url}/admin/v1/merchants/{merchant}/catalogue/imports/{uuid.uuid4().hex[:12]}"
    t = time.perf_counter()
    async with http.put(
        target, data=_stream(body), headers={**ADMIN, "Content-Type": ctype}
    ) as resp:
        report = await resp.json()
        elapsed = time.perf_counter() - t
    if resp.status != 200 or report.get("state") != "done":
        raise RuntimeError(f"import failed: {resp.status} {report}")
    return elapsed, report


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


async def _sales(url: str, merchant: str, member: str, n: int, lines: int) -> dict[str, Any]:
    from gateway import auth
    from gateway.settings import DEV_JWT_SECRET

    token = auth.mint_pos(DEV_JWT_SECRET, merchant, "s1", "bench", 3600)
    times: dict[str, list[float]] = {"with_category": [], "without_category": []}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url.replace("http", "ws") + "/ws") as ws,
    ):
        request = TimedRequests(ws)

        _, hello = await request({"type": "hello", "versions": [1], "token": token})
        assert hello["type"] == "welcome", hello
        for i in range(2 * n + 20):  # the first 20: warm-up, not recorded
            kind = "with_category" if i % 2 else "without_category"
            skus = [f"SKU-{(i * lines + j) % 1000:07d}" for j in range(lines)]
            items = [
                {"sku": s, "qty": 1, "price": 500}
                | ({"category": f"cat-{k % 50}"} if kind == "with_category" else {})
                for k, s in enumerate(skus)
            ]
            frame = {
                "type": "sale",
                "op": f"b-{uuid.uuid4().hex}",
                "member": member,
                "total": 500 * lines,
                "lines": items,
            }
            ms, reply = await request(frame)
            if reply.get("type") != "result":
                raise RuntimeError(f"sale failed: {reply}")
            if i >= 20:
                times[kind].append(ms)
    out: dict[str, Any] = {
        k: {"n": len(v), "p50": round(_pct(v, 50), 3), "p99": round(_pct(v, 99), 3)}
        for k, v in times.items()
    }
    out["added_p50_ms"] = round(out["without_category"]["p50"] - out["with_category"]["p50"], 3)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from loadtests.seed import seed

    scratch = Scratch(args.database_url, args.redis_url)
    await scratch.create()
    probes: dict[str, float] = {}
    figures: dict[str, list[float]] = {"create": [], "unchanged": [], "update": [],
                                       "csv_create": []}  # fmt: skip
    try:
        # sales one after another go past a session's default rate (200/s): lift it
        env = {"GATEWAY_LEDGER_LANES": "1", "GATEWAY_RATE_PER_SECOND": "100000"}
        node = Node(scratch, "catalogue-bench", env)
        try:
            await node.wait_ready()
            products = _products(args.rows)
            bodies = {
                "create": (jsonl_body(products), "application/x-ndjson"),
                "update": (jsonl_body(_products(args.rows, 1)), "application/x-ndjson"),
                "csv_create": (csv_body(products), "text/csv"),
            }
            rss = {"before": rss_kb(node.pid), "peak": 0}

            async def sample() -> None:
                while True:
                    rss["peak"] = max(rss["peak"], rss_kb(node.pid))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            async with aiohttp.ClientSession() as http:
                for r in range(args.runs):
                    probes[f"run{r + 1}"] = probe_ms()
                    m1 = (await seed(scratch.dsn, 1, 0, f"cat{r}-{uuid.uuid4().hex[:6]}")).merchant
                    m2 = (await seed(scratch.dsn, 1, 0, f"csv{r}-{uuid.uuid4().hex[:6]}")).merchant
                    steps = [
                        ("create", m1, "create", "created"),
                        ("unchanged", m1, "create", "unchanged"),
                        ("update", m1, "update", "updated"),
                        ("csv_create", m2, "csv_create", "created"),
                    ]
                    for name, merchant, body_name, counted in steps:
                        body, ctype = bodies[body_name]
                        seconds, report = await timed_import(http, node.url, merchant, body, ctype)
                        if report[counted] != args.rows:
                            raise RuntimeError(f"{name}: {counted} {report[counted]} != rows")
                        figures[name].append(args.rows / seconds)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            rss["after"] = rss_kb(node.pid)
            sales: dict[str, Any] = {}
            if args.sales:
                seeded = await seed(scratch.dsn, 1, 0, f"sales-{uuid.uuid4().hex[:6]}")
                async with aiohttp.ClientSession() as http:
                    await timed_import(
                        http, node.url, seeded.merchant, bodies["create"][0], "application/x-ndjson"
                    )
                probes["sales"] = probe_ms()
                sales = await _sales(
                    node.url, seeded.merchant, seeded.members[0], args.sales, args.lines
                )
        finally:
            node.stop()
    finally:
        await scratch.drop()
    return {
        "rows": args.rows,
        "runs": args.runs,
        "body_bytes": {k: len(v[0]) for k, v in bodies.items()},
        "import_rows_per_s": {
            k: {"median": round(statistics.median(v)), "runs": [round(x) for x in v]}
            for k, v in figures.items()
        },
        "node_rss_kb": rss,
        "sale_ms": sales,
        "lines_per_sale": args.lines,
        "speed_probe_ms": probes,
        "probe_spread": spread(probes),
    }


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--rows", type=int, default=100_000, help="products per import")
    p.add_argument("--runs", type=int, default=3, help="runs of each kind of import")
    p.add_argument("--sales", type=int, default=300, help="sales timed of each kind (0: none)")
    p.add_argument("--lines", type=int, default=3, help="lines per sale timed")
    p.add_argument("--json", help="also write the figures to this file")


def main(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m loadtests.catalogue")
    add_flags(parser)
    sys.exit(main(parser.parse_args()))
