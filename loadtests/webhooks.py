"""The webhooks bench (``python -m loadtests webhooks``): how many deliveries a node sends per
second to a local receiver, and the ledger's latency while one endpoint times out on every
call, against the same node with no endpoint, in the same run.

1. **Deliveries/s.** A node process (``python -m gateway serve``, its webhook worker on) and a
   receiver process (an aiohttp server answering 200) on this machine; ``--deliveries`` events
   for ``--members`` members are written at once (``webhook_events``, whose trigger writes one
   delivery each to the merchant's one endpoint), and the bench times from that commit until
   every delivery is ``delivered``. The members' deliveries go in order per member, as always.
2. **The ledger's latency, same run.** Sales at ``--rate`` per second, open loop (each timed from
   its scheduled send to its reply, so a stall counts for every sale behind it), over
   ``--sessions`` register sessions on that node, in alternating phases of ``--seconds`` each:
   ``none`` (no endpoint), ``timeout`` (one endpoint subscribed to points.changed whose
   receiver never answers: every attempt runs into GATEWAY_WEBHOOKS_TIMEOUT) and ``ok`` (one
   healthy endpoint sent every change). ``--rounds`` rounds of the three (none, timeout, ok,
   none, ...), figures per kind over all rounds, and each round's p99 (the machine's speed
   moves between minutes: compare a round's phases with each other).

The speed probe (``loadtests/speed.py``) is read before each stage; quote figures with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from loadtests.nodes import Node, Scratch, free_port
from loadtests.report import emit
from loadtests.speed import probe_ms

ADMIN = {"Authorization": "Bearer dev-admin-token"}


# ----------------------------------------------------------------------------- the receiver


def receiver_app() -> web.Application:
    """``/ok`` answers 200 at once; ``/timeout`` never answers in time."""

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def hang(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(3600)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/timeout", hang)
    return app


def _serve_receiver(port: int) -> None:  # pragma: no cover - runs in the receiver process
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        receiver_app(),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=0.5,
    )


class Receiver:
    """The receiver in a process of its own (not sharing the bench's or the node's loop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtests.webhooks", "--receiver", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.post(self.url + "/ok", data=b"{}") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.1)
        raise TimeoutError("the receiver did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# ----------------------------------------------------------------------------- figures


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))] if s else float("nan")


def _summary(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": round(_pct(values, 50), 2),
        "p99": round(_pct(values, 99), 2),
        "max": round(max(values), 2) if values else float("nan"),
        "mean": round(statistics.fmean(values), 2) if values else float("nan"),
    }


# ----------------------------------------------------------------------------- the stages


async def _hook(http: aiohttp.ClientSession, node: Node, merchant: str, url: str) -> str:
    async with http.post(
        f"{node.url}/admin/v1/merchants/{merchant}/webhooks",
        headers=ADMIN,
        json={"url": url, "events": ["points.changed"]},
    ) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        return str(body["id"])


async def _unhook(http: aiohttp.ClientSession, node: Node, merchant: str, hook: str) -> None:
    async with http.delete(
        f"{node.url}/admin/v1/merchants/{merchant}/webhooks/{hook}", headers=ADMIN
    ) as resp:
        assert resp.status == 200, await resp.text()


async def throughput(
    conn: Any, merchant: str, members: list[str], deliveries: int, limit: float = 600.0
) -> dict[str, Any]:
    """Write ``deliveries`` events at once and time them all delivered."""
    await conn.execute(
        """INSERT INTO webhook_events (merchant_id, member_id, type, data)
           SELECT $1, ($2::text[])[1 + g % cardinality($2::text[])], 'points.changed',
                  jsonb_build_object('member', ($2::text[])[1 + g % cardinality($2::text[])],
                                     'version', g, 'kind', 'earn', 'op', 'bench-' || g,
                                     'posted_delta', 1, 'held_delta', 0, 'posted', g,
                                     'held', 0, 'available', g, 'channel', 'pos',
                                     'store', 's1', 'terminal', 't1')
             FROM generate_series(1, $3) g
            ORDER BY g""",
        merchant,
        members,
        deliveries,
    )
    started = time.perf_counter()
    # what autovacuum does soon after a table grows by 10%: here, at once (planned with the
    # statistics of an empty table, the claim's order check read every pending row)
    await conn.execute("ANALYZE webhook_deliveries")
    while True:
        done = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
        )
        elapsed = time.perf_counter() - started
        if done >= deliveries or elapsed > limit:
            break
        await asyncio.sleep(0.1)
    attempts = await conn.fetchval("SELECT coalesce(sum(attempts), 0) FROM webhook_deliveries")
    return {
        "deliveries": deliveries,
        "delivered": done,
        "attempts": attempts,
        "seconds": round(elapsed, 3),
        "per_second": round(done / elapsed, 1),
    }


class _Register:
    """One register session: sales sent open loop, replies matched by id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            frame = json.loads(msg.data)
            fut = self.waiting.pop(str(frame.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(frame)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        rid = uuid.uuid4().hex[:12]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        await self.ws.send_str(json.dumps({**frame, "id": rid}))
        return await asyncio.wait_for(fut, 30)


async def sales_phase(
    registers: list[_Register], members: list[str], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Sales at ``rate``/s for ``seconds``, round robin over the registers; latencies in ms
    from each sale's scheduled time, and how many were refused."""
    n = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.05
    latencies: list[float] = []
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        reply = await registers[i % len(registers)].request(
            {
                "type": "sale",
                "op": f"wb-{uuid.uuid4().hex}",
                "member": members[i % len(members)],
                "total": 1000 + i % 500,
            }
        )
        if reply.get("type") != "result":
            refused += 1
        latencies.append((time.perf_counter() - at) * 1000)

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies, refused


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from gateway import auth
    from gateway.settings import DEV_JWT_SECRET
    from loadtests.seed import seed

    scratch = Scratch(args.database_url, args.redis_url)
    await scratch.create()
    probes: dict[str, float] = {}
    receiver = Receiver()
    node: Node | None = None
    try:
        seeded = await seed(scratch.dsn, args.members, 0, f"wh-{uuid.uuid4().hex[:6]}")
        merchant, members = seeded.merchant, seeded.members
        env = {
            "GATEWAY_WEBHOOKS_ALLOW_PRIVATE": "1",
            "GATEWAY_WEBHOOKS_POLL_SECONDS": "0.1",
            "GATEWAY_WEBHOOKS_CONCURRENCY": str(args.concurrency),
        }
        node = Node(scratch, "wh-bench", env)
        await asyncio.gather(node.wait_ready(), receiver.wait_ready())
        conn = await asyncpg.connect(scratch.dsn)
        try:
            async with aiohttp.ClientSession() as http:
                hook = await _hook(http, node, merchant, receiver.url + "/ok")
                probes["throughput"] = probe_ms()
                sent = await throughput(conn, merchant, members, args.deliveries)
                await _unhook(http, node, merchant, hook)

                registers = []
                for i in range(args.sessions):
                    ws = await http.ws_connect(node.url.replace("http", "ws") + "/ws")
                    r = _Register(ws)
                    token = auth.mint_pos(DEV_JWT_SECRET, merchant, "s1", f"t{i}", 3600)
                    hello = await r.request({"type": "hello", "versions": [1], "token": token})
                    assert hello["type"] == "welcome", hello
                    registers.append(r)
                await sales_phase(registers, members, args.rate, 1.0)  # warm-up, not counted
                probes["ledger"] = probe_ms()
                phases: dict[str, list[float]] = {"none": [], "timeout": [], "ok": []}
                rounds: dict[str, list[float]] = {kind: [] for kind in phases}
                refused = dict.fromkeys(phases, 0)
                for _ in range(args.rounds):
                    for kind in phases:
                        hook = ""
                        if kind != "none":
                            hook = await _hook(http, node, merchant, f"{receiver.url}/{kind}")
                        lat, bad = await sales_phase(registers, members, args.rate, args.seconds)
                        phases[kind] += lat
                        rounds[kind].append(round(_pct(lat, 99), 2))
                        refused[kind] += bad
                        if hook:
                            await _unhook(http, node, merchant, hook)
                for r in registers:
                    await r.ws.close()
                    r.reader.cancel()
        finally:
            await conn.close()
    finally:
        if node is not None:
            node.stop()
        receiver.stop()
        await scratch.drop()
    ledger = {kind: _summary(lat) for kind, lat in phases.items()}
    base = ledger["none"]["p99"]
    return {
        "throughput": sent,
        "ledger_sale_ms": ledger,
        "ledger_p99_ms_by_round": rounds,
        "refused": refused,
        "p99_ratio_timeout_vs_none": round(ledger["timeout"]["p99"] / base, 2) if base else None,
        "p99_ratio_ok_vs_none": round(ledger["ok"]["p99"] / base, 2) if base else None,
        "rate": args.rate,
        "seconds_per_phase": args.seconds,
        "sessions": args.sessions,
        "members": args.members,
        "concurrency": args.concurrency,
        "speed_probe_ms": probes,
    }


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--deliveries", type=int, default=20_000, help="deliveries timed")
    p.add_argument("--members", type=int, default=2_000, help="members they are about")
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="the node's GATEWAY_WEBHOOKS_CONCURRENCY (POSTs in flight per endpoint)",
    )
    p.add_argument("--rate", type=float, default=200.0, help="sales per second, open loop")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each phase")
    p.add_argument("--sessions", type=int, default=8, help="register sessions")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the three phases")
    p.add_argument("--json", help="also write the figures to this file")


def main(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args))
    emit(result, args.json)
    t = result["throughput"]
    return 0 if t["delivered"] == t["deliveries"] and not any(result["refused"].values()) else 1


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        _serve_receiver(int(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(prog="python -m loadtests.webhooks")
    add_flags(parser)
    sys.exit(main(parser.parse_args()))
