"""Baselines measured in the same run as the gateway, on the same machine, so the gateway's
figures read as ratios of what the bare parts can do:

* ledger path: ``pgbench`` running a custom script, one transaction per hold: a single-row
  conditional UPDATE of an accounts-like table and an INSERT into an entries table;
* Redis path: ``redis-benchmark`` running EVAL of a small check-and-hold Lua (plain and
  pipelined), and PUBLISH;
* fan-out: a naive aiohttp server that loops ``await ws.send_str(msg)`` over all its sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import re
import shutil
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiohttp import web

PGBENCH_SETUP = """
DROP TABLE IF EXISTS lt_pgb_entries, lt_pgb_accounts;
CREATE TABLE lt_pgb_accounts (id int PRIMARY KEY, posted bigint NOT NULL, held bigint NOT NULL,
    version bigint NOT NULL, CHECK (posted - held >= 0));
CREATE TABLE lt_pgb_entries (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member_id int NOT NULL, version bigint NOT NULL, held_delta bigint NOT NULL,
    created_at timestamptz NOT NULL);
INSERT INTO lt_pgb_accounts SELECT g, 1000000000, 0, 0 FROM generate_series(1, 10000) g;
"""

PGBENCH_SCRIPT = """\\set id random(1, 10000)
BEGIN;
UPDATE lt_pgb_accounts SET held = held + 10, version = version + 1 WHERE id = :id AND posted - held >= 10;
INSERT INTO lt_pgb_entries (member_id, version, held_delta, created_at) VALUES (:id, 0, 10, now());
END;
"""

HOLD_LUA = (
    "local a = tonumber(redis.call('HGET', KEYS[1], 'a') or '1000000') "
    "local n = tonumber(ARGV[1]) "
    "if a < n then return 0 end "
    "redis.call('HSET', KEYS[1], 'a', a - n) "
    "redis.call('HINCRBY', KEYS[1], 'h', n) "
    "return 1"
)


async def pgbench(dsn: str, seconds: float, clients: int = 16) -> dict[str, Any]:
    """Durable single-hold transactions per second (the ledger's floor without batching)."""
    if shutil.which("pgbench") is None:
        return {"error": "pgbench not installed"}
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(PGBENCH_SETUP)
    finally:
        await conn.close()
    u = urlparse(dsn)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(PGBENCH_SCRIPT)
        script = f.name
    cmd = [
        "pgbench", "-n", "-f", script, "-c", str(clients), "-j", "2", "-T", str(max(1, int(seconds))),
        "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres",
        (u.path or "/postgres").lstrip("/"),
    ]  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    finally:
        Path(script).unlink(missing_ok=True)  # noqa: ASYNC240 - one tiny local file
    text = out.decode(errors="replace")
    tps = re.search(r"tps = ([\d.]+)", text)
    lat = re.search(r"latency average = ([\d.]+) ms", text)
    if not tps:
        return {"error": text[-500:]}
    return {
        "clients": clients,
        "seconds": int(seconds),
        "tps": round(float(tps.group(1)), 1),
        "latency_avg_ms": float(lat.group(1)) if lat else None,
        "what": "BEGIN; conditional UPDATE of one account row; INSERT one entry; COMMIT",
    }


async def redis_benchmark(redis_url: str, prefix: str, requests: int = 100_000) -> dict[str, Any]:
    if shutil.which("redis-benchmark") is None:
        return {"error": "redis-benchmark not installed"}
    u = urlparse(redis_url)
    base = ["redis-benchmark", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379), "-q"]
    if u.password:
        base += ["-a", u.password]
    runs = {
        "eval_hold": ["-c", "50", "-n", str(requests), "-r", "10000",
                      "EVAL", HOLD_LUA, "1", f"{prefix}:pgb:__rand_int__", "10"],
        "eval_hold_pipelined16": ["-c", "50", "-P", "16", "-n", str(requests * 2), "-r", "10000",
                                  "EVAL", HOLD_LUA, "1", f"{prefix}:pgb:__rand_int__", "10"],
        "publish": ["-c", "50", "-n", str(requests), "PUBLISH", f"{prefix}:bench-channel", "x" * 160],
    }  # fmt: skip
    out: dict[str, Any] = {"clients": 50}
    for name, args in runs.items():
        proc = await asyncio.create_subprocess_exec(
            *base, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        text, _ = await asyncio.wait_for(proc.communicate(), 120)
        m = re.findall(r"([\d.]+) requests per second", text.decode(errors="replace"))
        p50 = re.findall(r"p50=([\d.]+) msec", text.decode(errors="replace"))
        out[name] = {
            "ops_per_s": float(m[-1]) if m else None,
            "p50_ms": float(p50[-1]) if p50 else None,
        }
    await _clean_redis(redis_url, f"{prefix}:pgb:*")
    return out


async def _clean_redis(url: str, pattern: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 1000):
            await r.delete(*keys[i : i + 1000])
    finally:
        await r.aclose()


# ----------------------------------------------------------------------------- naive fan-out


def _naive_server(port: int, ready: Connection) -> None:
    """A plain aiohttp websocket server; POST /fire loops send_str over every socket."""
    import uvloop

    sockets: set[web.WebSocketResponse] = set()

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=15.0)
        await ws.prepare(request)
        sockets.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            sockets.discard(ws)
        return ws

    async def fire(request: web.Request) -> web.Response:
        msg = await request.text()
        started = time.perf_counter()
        for ws in list(sockets):
            with contextlib.suppress(Exception):
                await ws.send_str(msg)
        return web.json_response(
            {"sockets": len(sockets), "loop_ms": (time.perf_counter() - started) * 1000}
        )

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/fire", fire)
    uvloop.install()
    ready.send(True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def _naive_clients(urls: list[str], n: int, ips: list[str] | None, conn: Connection) -> None:
    import uvloop

    from loadtests.worker import raise_nofile

    raise_nofile()

    async def main() -> None:
        from loadtests.client import connectors

        https = connectors(ips)
        receipts: dict[str, list[int]] = {}
        sockets = []
        sem = asyncio.Semaphore(200)

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                now = time.monotonic_ns()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    receipts.setdefault(msg.data[:40], []).append(now)

        async def open_one(i: int) -> None:
            async with sem:
                try:
                    ws = await https[i % len(https)].ws_connect(urls[i % len(urls)] + "/ws")
                except (aiohttp.ClientError, OSError):
                    return
                sockets.append((ws, asyncio.create_task(reader(ws))))

        await asyncio.gather(*(open_one(i) for i in range(n)))
        gc.collect()  # the same collector treatment as the gateway's generator (worker.py)
        gc.freeze()
        conn.send(("ready", len(sockets)))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        conn.send(("result", receipts))
        for ws, task in sockets:
            await ws.close()
            task.cancel()
        for h in https:
            await h.close()

    uvloop.install()
    asyncio.run(main())


async def naive_broadcast(
    sessions: int, servers: int, rounds: int, client_procs: int, source_ips: list[str] | None
) -> dict[str, Any]:
    """Time from POST /fire (to every server at once) to the last receipt."""
    ctx = multiprocessing.get_context("spawn")
    ports = [_free_port() for _ in range(servers)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = []
    try:
        for p in ports:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_naive_server, args=(p, child), daemon=True)
            proc.start()
            procs.append(proc)
            if not parent.poll(30):
                return {"error": "naive server did not start"}
        await asyncio.sleep(0.5)
        pipes = []
        for i in range(client_procs):
            parent, child = ctx.Pipe()
            share = sessions * (i + 1) // client_procs - sessions * i // client_procs
            proc = ctx.Process(
                target=_naive_clients, args=(urls, share, source_ips, child), daemon=True
            )
            proc.start()
            procs.append(proc)
            pipes.append(parent)
        held = 0
        deadline = time.monotonic() + 60 + sessions / 200
        for pipe in pipes:
            msg = await _recv(pipe, deadline)
            if msg is None:
                return {"error": "naive clients did not connect in time"}
            held += msg[1]
        sent: dict[str, int] = {}
        loops = []
        async with aiohttp.ClientSession() as http:
            for r in range(rounds):
                marker = f"naive-{r:04d}-" + "x" * 100
                sent[marker[:40]] = time.monotonic_ns()

                async def fire(url: str, body: str = marker) -> Any:
                    async with http.post(url + "/fire", data=body) as resp:
                        return await resp.json()

                loops.append(await asyncio.gather(*(fire(u) for u in urls)))
                await asyncio.sleep(1.5)
        receipts: dict[str, list[int]] = {}
        for pipe in pipes:
            pipe.send("report")
        deadline = time.monotonic() + 60
        for pipe in pipes:
            msg = await _recv(pipe, deadline)
            for k, v in (msg[1] if msg else {}).items():
                receipts.setdefault(k, []).extend(v)
        lasts = []
        for key, t in sent.items():
            ts = receipts.get(key, [])
            lasts.append(
                {
                    "received": len(ts),
                    "last_receipt_ms": round((max(ts) - t) / 1e6, 3) if ts else None,
                }
            )
        done = sorted(x["last_receipt_ms"] for x in lasts if x["last_receipt_ms"] is not None)
        return {
            "sessions": held,
            "servers": servers,
            "rounds": lasts,
            "last_receipt_ms": done[len(done) // 2] if done else None,
            "server_loop_ms": [round(max(x["loop_ms"] for x in r), 1) for r in loops],
        }
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()


async def _recv(pipe: Connection, deadline: float) -> Any:
    """The next message from a child process, or None at the deadline (or if it died)."""
    while time.monotonic() < deadline:
        try:
            if pipe.poll(0.05):
                return pipe.recv()
        except (EOFError, OSError):
            return None
        await asyncio.sleep(0)
    return None


def _free_port() -> int:
    from loadtests.nodes import free_port

    return free_port()
