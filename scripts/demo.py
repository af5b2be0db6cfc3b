"""The product's main job, end to end on this machine: migrate, start two gateway nodes, seed a
merchant and a shopper, and show a POS sale on node A pushing the new balance to the shopper's
app session on node B, then a redemption (reserve + commit) doing the same. Stops the nodes
with SIGTERM (graceful drain) at the end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp

from scripts.services import ensure


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.poll() is not None:
                raise SystemExit(f"gateway node exited with {proc.returncode}")
            try:
                async with http.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"gateway at {url} did not become ready")


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws, self.name, self.n = ws, name, 0

    async def call(self, frame: dict[str, Any]) -> dict[str, Any]:
        import orjson

        self.n += 1
        frame = {"id": f"{self.name}-{self.n}", **frame}
        await self.ws.send_str(orjson.dumps(frame).decode())
        while True:
            msg = orjson.loads((await self.ws.receive()).data)
            if msg.get("id") == frame["id"]:
                return dict(msg)

    async def push(self, timeout: float = 5.0) -> dict[str, Any]:
        import orjson

        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        return dict(orjson.loads(msg.data))


async def demo(env: dict[str, str], urls: list[str]) -> None:
    import asyncpg

    from gateway import auth
    from gateway.programme import create_merchant
    from gateway.settings import Settings

    secret = Settings.from_env(env).auth.jwt_secret
    merchant = "demo-coffee"
    phone = f"(415) 555-{int(time.time()) % 10000:04d}"
    conn = await asyncpg.connect(env["DATABASE_URL"])
    await create_merchant(conn, merchant, "Demo Coffee Co.", points_per_unit=1)
    await conn.close()
    step(f"merchant {merchant!r} ready")

    async with aiohttp.ClientSession() as http:
        pos = Client(await http.ws_connect(urls[0] + "/ws"), "pos")
        w = await pos.call(
            {
                "type": "hello",
                "versions": [1],
                "token": auth.mint_pos(secret, merchant, "store-1", "till-4"),
            }
        )
        step(f"POS session on node {w['node']} (store-1 / till-4)")
        enrolled = await pos.call({"type": "enrol", "phone": phone, "name": "Sam"})
        member = enrolled["data"]["member"]
        again = await pos.call({"type": "enrol", "phone": phone})
        step(
            f"cashier enrolled {phone} -> member {member} (created={enrolled['data'].get('created', False)});"
            f" enrolling it again returns the same member (created={again['data'].get('created', False)})"
        )

        app = Client(await http.ws_connect(urls[1] + "/ws"), "app")
        w = await app.call(
            {"type": "hello", "versions": [1], "token": auth.mint_app(secret, merchant, member)}
        )
        sub = await app.call({"type": "subscribe", "member": member})
        step(
            f"app session on node {w['node']}: subscribed, balance "
            f"{sub['data']['balance']['available']} (version {sub['data']['balance']['version']})"
        )

        view = await pos.call({"type": "cashier_view", "member": member})
        d = view["data"]
        tier = d["tier"].get("name") or "(no tiers configured)"
        step(
            f"cashier view (level 2): available {d['balance']['available']}, tier {tier}, "
            f"{len(d['rewards'])} rewards, {len(d['recent'])} recent purchases; "
            "the register now receives live changes"
        )

        t0 = time.perf_counter()
        sale = await pos.call(
            {
                "type": "sale",
                "op": f"sale-{member}",
                "member": member,
                "total": 4250,
                "lines": [
                    {"sku": "latte", "qty": 2, "price": 475},
                    {"sku": "beans-1kg", "qty": 1, "price": 3300},
                ],
            }
        )
        t_reply = time.perf_counter()
        change = await app.push()
        t_push = time.perf_counter()
        step(
            f"POS sale $42.50 -> {sale['data']['points']} points, reply in "
            f"{(t_reply - t0) * 1000:.1f} ms"
        )
        step(
            f"app on the other node got {change['type']}: available {change['available']} "
            f"(version {change['version']}, cause {change['cause']['kind']}) "
            f"{(t_push - t_reply) * 1000:.1f} ms after the POS reply"
        )

        hold = f"hold-{member}"
        r = await pos.call({"type": "reserve", "op": hold, "member": member, "points": 30})
        held = await app.push()
        step(
            f"POS reserved 30 points: hold {r['data']['status']}; app sees available "
            f"{held['available']} (held {held['held']})"
        )
        c = await pos.call(
            {
                "type": "commit",
                "op": f"commit-{member}",
                "member": member,
                "hold": hold,
                "points": 25,
            }
        )
        done = await app.push()
        step(
            f"POS committed 25 of 30 (rest released): {c['data']['status']}; app sees "
            f"posted {done['posted']}, available {done['available']} (version {done['version']})"
        )
        again = await pos.call(
            {
                "type": "commit",
                "op": f"commit-{member}",
                "member": member,
                "hold": hold,
                "points": 25,
            }
        )
        step(
            f"POS retried the same commit: same answer ({again['data']['status']}, "
            f"version {again['data']['balance']['version']}), nothing applied twice"
        )
        await pos.ws.close()
        await app.ws.close()
    step("demo finished: one balance, every point of interaction, in real time")


def main() -> int:
    step("checking PostgreSQL and Redis")
    env = {**os.environ, **ensure()}
    step(f"PostgreSQL: {env['DATABASE_URL']}  Redis: {env['REDIS_URL']}")
    step("applying migrations")
    subprocess.run([sys.executable, "-m", "gateway", "migrate"], env=env, check=True)
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for name, port in (("node-a", 8081), ("node-b", 8082)):
            node_env = {
                **env,
                "GATEWAY_PORT": str(port),
                "GATEWAY_NODE_ID": name,
                "GATEWAY_LOG_LEVEL": "WARNING",
                "GATEWAY_DRAIN_SECONDS": "3",
            }
            procs.append(subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=node_env))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs, strict=True):
            asyncio.run(wait_ready(url, proc))
        step(f"two gateway nodes ready: {urls[0]} (node-a), {urls[1]} (node-b)")
        asyncio.run(demo(env, urls))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        step("nodes stopped (SIGTERM, graceful drain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
