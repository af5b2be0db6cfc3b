"""The product's main job, end to end on this machine: migrate, start two gateway nodes, seed a
merchant and a shopper, and show a POS sale on node A pushing the new balance to the shopper's
app session on node B, then a redemption (reserve + commit) doing the same, and the commit
sent again with its op. The register and the app are ``loyalty_client.Client``s (the asyncio
client of clients/python). Stops the nodes with SIGTERM (graceful drain) at the end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time

import aiohttp
from loyalty_client import Changed, Client

from protocol.loyalty import ReturnLine
from protocol.messages import BalanceChanged, SaleLine
from protocol.wallet import Consents
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


async def next_change(app: Client, timeout: float = 5.0) -> BalanceChanged:
    """The app's next balance change (other events are skipped)."""
    async with asyncio.timeout(timeout):
        async for event in app.events():
            if isinstance(event, Changed):
                return event.change
    raise SystemExit("the app client stopped")


async def segment_size(http: aiohttp.ClientSession, url: str, want: int) -> int:
    """The segment's size once it is ``want`` (or after 3 s: what it is then)."""
    deadline = time.monotonic() + 3
    while True:
        async with http.get(url) as resp:
            size = int((await resp.json())["size"])
        if size == want or time.monotonic() > deadline:
            return size
        await asyncio.sleep(0.05)


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

    with tempfile.TemporaryDirectory(prefix="demo-till-") as journal_dir:
        # The register: loyalty_client.Client on node A (node B as its fallback), a token from a
        # callback (called again before every reconnect) and its op journal on disk.
        till = Client(
            urls,
            lambda: auth.mint_pos(secret, merchant, "store-1", "till-4"),
            journal=os.path.join(journal_dir, "till-4.db"),
            prefix="till4-",
        )
        w = await till.connect()
        step(f"POS session on node {w.node} (store-1 / till-4), op journal in {journal_dir}")
        enrolled = await till.enrol(phone, name="Sam")
        member = enrolled.member
        again = await till.enrol(phone)
        step(
            f"cashier enrolled {phone} -> member {member} (created={enrolled.created});"
            f" enrolling it again returns {'the same' if again.member == member else 'ANOTHER'}"
            " member (`created` absent: the frame omits defaults)"
        )

        # The shopper's app: on node B (node A as its fallback).
        app = Client(
            list(reversed(urls)), lambda: auth.mint_app(secret, merchant, member), prefix="app-"
        )
        w = await app.connect()
        sub = await app.subscribe(member)
        step(
            f"app session on node {w.node}: subscribed, balance {sub.balance.available}"
            f" (version {sub.balance.version})"
        )

        view = await till.cashier_view(member)
        tier = view.tier.name or "(no tiers configured)"
        step(
            f"cashier view (level 2): available {view.balance.available}, tier {tier}, "
            f"{len(view.rewards)} rewards, {len(view.recent)} recent purchases; "
            "the register now receives live changes"
        )

        t0 = time.perf_counter()
        sale = await till.sale(
            member,
            4250,
            [SaleLine(sku="latte", qty=2, price=475), SaleLine(sku="beans-1kg", qty=1, price=3300)],
        )
        t_reply = time.perf_counter()
        change = await next_change(app)
        t_push = time.perf_counter()
        step(
            f"POS sale $42.50 (op {sale.op}) -> {sale.points} points, reply in "
            f"{(t_reply - t0) * 1000:.1f} ms"
        )
        step(
            f"app on the other node got balance_changed: available {change.available} "
            f"(version {change.version}, cause {change.cause.kind}) "
            f"{(t_push - t_reply) * 1000:.1f} ms after the POS reply"
        )

        hold = await till.reserve(member, 30)
        held = await next_change(app)
        step(
            f"POS reserved 30 points: hold {hold.status}; app sees available "
            f"{held.available} (held {held.held})"
        )
        commit_op = till.new_op()  # made once, journaled before it is sent, reused on retry
        done = await till.commit(member, hold.hold, 25, op=commit_op)
        posted = await next_change(app)
        step(
            f"POS committed 25 of 30 (rest released): {done.status}; app sees "
            f"posted {posted.posted}, available {posted.available} (version {posted.version})"
        )
        again_done = await till.commit(member, hold.hold, 25, op=commit_op)
        step(
            f"POS retried the same commit (same op): same answer ({again_done.status}, "
            f"version {again_done.balance.version if again_done.balance else '?'}),"
            " nothing applied twice"
        )
        # Segments: the worked example of docs/loyalty.md, defined through the admin API; the
        # shopper consents to email in the app, buys three pans, enters it; returns one, leaves.
        seg_url = f"{urls[0]}/admin/v1/merchants/{merchant}/segments/kitchen-enthusiast"
        admin = {"Authorization": f"Bearer {env.get('GATEWAY_ADMIN_TOKEN', 'dev-admin-token')}"}
        kitchen = {
            "name": "High-Value Kitchen Enthusiast",
            "condition": {
                "type": "all",
                "conditions": [
                    {"type": "spend", "min": 30000, "within_days": 365},
                    {
                        "type": "bought",
                        "of": "category",
                        "key": "kitchen",
                        "min": 3,
                        "within_days": 180,
                    },
                    {"type": "consent", "channel": "email"},
                ],
            },
        }
        async with aiohttp.ClientSession(headers=admin) as http:
            async with http.put(seg_url, json=kitchen) as resp:
                assert resp.status == 200, await resp.text()
            await app.update_profile(member, consent=Consents(email=True))
            pans = await till.sale(
                member, 36000, [SaleLine(sku="pan", qty=3, price=12000, category="kitchen")]
            )
            size = await segment_size(http, seg_url, 1)  # refreshed right after the reply
            step(f"segment 'High-Value Kitchen Enthusiast': the $360 of pans puts Sam in ({size})")
            back = till.new_op()
            await till.return_(member, pans.op, [ReturnLine(sku="pan", qty=1)], op=back)
            size = await segment_size(http, seg_url, 0)
            step(f"one pan returned ($240, 2 kitchen items left): out again ({size})")

        balance = await app.balance(member)
        step(
            f"app reads the balance: posted {balance.posted}, version {balance.version};"
            f" the register's journal holds {len(await till.journal.pending())} unsettled ops"
        )
        await app.close()
        await till.close()
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
