"""``python -m scripts.screenshots``: docs/wallet.png and docs/console.png, the two pages as a
shopper and a cashier see them, in headless chromium against a local node on a scratch
database (a programme with tiers, rewards and offers; a member with a few purchases, a code
and a reserved payment at the till). Run it after changing the pages; the README links the
pictures."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway import auth
from gateway.settings import DEV_ADMIN_TOKEN, DEV_JWT_SECRET
from loadtests.nodes import Node, Scratch, free_port
from loadtests.pages import CHROMIUM, FLAGS

DOCS = Path(__file__).resolve().parents[1] / "docs"
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}


async def _programme(http: aiohttp.ClientSession, url: str, merchant: str) -> None:
    base = f"{url}/admin/v1/merchants/{merchant}"

    async def put(path: str, body: dict[str, Any]) -> None:
        async with http.put(base + path, json=body, headers=ADMIN) as resp:
            assert resp.status < 300, (path, resp.status, await resp.text())

    await put("", {"name": "Corner Coffee", "currency": "USD", "points_per_unit": "1"})
    await put(
        "/tiers",
        {
            "tiers": [
                {"id": "green", "name": "Green", "threshold": 0},
                {"id": "gold", "name": "Gold", "threshold": 100, "multiplier": "1.5"},
                {"id": "reserve", "name": "Reserve", "threshold": 1000, "multiplier": "2"},
            ]
        },
    )
    await put(
        "/rewards/coffee",
        {"name": "A coffee on us", "cost": 120, "kind": "free_item", "sku": "latte"},
    )
    await put(
        "/rewards/five-off", {"name": "$5 off", "cost": 400, "kind": "amount_off", "value": 500}
    )
    await put(
        "/rewards/tasting",
        {
            "name": "Reserve tasting",
            "cost": 900,
            "kind": "free_item",
            "sku": "tasting",
            "min_tier": "gold",
        },
    )
    await put(
        "/rules/beans",
        {"kind": "promotion", "name": "Double points on beans this week", "multiplier": "2"},
    )
    await put(
        "/rules/big",
        {
            "kind": "promotion",
            "name": "50 bonus points on $40 or more",
            "bonus": 50,
            "min_total": 4000,
        },
    )


class _Till:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.n = ws, 0

    async def __call__(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        await self.ws.send_str(json.dumps({**frame, "id": str(self.n)}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == str(self.n):
                assert msg["type"] in ("result", "welcome"), msg
                return dict(msg.get("data", msg))


async def main() -> int:
    if CHROMIUM is None:
        print("chromium is needed: apt-get install chromium", file=sys.stderr)
        return 1
    from playwright.async_api import async_playwright

    scratch = Scratch("postgresql://postgres@127.0.0.1:5432/postgres", "redis://127.0.0.1:6379/0")
    await scratch.create()
    port = free_port()
    tokens: dict[str, str] = {}

    async def token(request: web.Request) -> web.Response:
        # the local pages' origins only (each node's own)
        page = request.headers.get("Origin", "")
        if not page.startswith("http://127.0.0.1:"):
            return web.Response(status=403)
        cors = {"Access-Control-Allow-Origin": page, "Access-Control-Allow-Credentials": "true"}
        return web.json_response({"token": tokens[request.match_info["who"]]}, headers=cors)

    back_end = web.Application()
    back_end.router.add_post("/token/{who}", token)
    runner = web.AppRunner(back_end, access_log=None)
    await runner.setup()
    be_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", be_port).start()
    merchant = f"corner-{uuid.uuid4().hex[:4]}"
    try:
        async with aiohttp.ClientSession() as http:
            conn_url = scratch.dsn
            import asyncpg

            from gateway.programme import create_merchant

            conn = await asyncpg.connect(conn_url)
            try:
                await create_merchant(conn, merchant)
                await conn.execute(
                    "INSERT INTO programmes (merchant_id, region) VALUES ($1, 'US')", merchant
                )
            finally:
                await conn.close()
            for who in ("wallet", "console"):
                node = Node(
                    scratch,
                    f"shots-{who}",
                    {"GATEWAY_PAGE_TOKEN_URL": f"http://127.0.0.1:{be_port}/token/{who}"},
                    port=port if who == "wallet" else None,
                )
                try:
                    await node.wait_ready()
                    if who == "wallet":
                        await _programme(http, node.url, merchant)
                        async with http.ws_connect(node.url.replace("http", "ws") + "/ws") as ws:
                            till = _Till(ws)
                            pos = auth.mint_pos(
                                DEV_JWT_SECRET, merchant, "market-st", "till-2", 600
                            )
                            await till({"type": "hello", "versions": [1], "token": pos})
                            m = (
                                await till(
                                    {
                                        "type": "enrol",
                                        "phone": "+1 415 555 2671",
                                        "email": "maya@example.org",
                                        "name": "Maya Lindqvist",
                                    }
                                )
                            )["member"]
                            for i, (total, sku) in enumerate(
                                (
                                    (4_850, "beans"),
                                    (1_275, "latte"),
                                    (6_240, "grinder"),
                                    (890, "latte"),
                                )
                            ):
                                await till(
                                    {
                                        "type": "sale",
                                        "op": f"s{i}",
                                        "member": m,
                                        "total": total,
                                        "lines": [{"sku": sku, "qty": 1, "price": total}],
                                    }
                                )
                            await till(
                                {
                                    "type": "redeem_reward",
                                    "op": "r1",
                                    "member": m,
                                    "reward": "coffee",
                                }
                            )
                            tokens["wallet"] = auth.mint_app(
                                DEV_JWT_SECRET, merchant, m, 600, "web"
                            )
                            tokens["console"] = pos
                    async with async_playwright() as pw:
                        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                        page = await browser.new_page(
                            viewport={"width": 1000, "height": 900}, device_scale_factor=1
                        )
                        await page.goto(f"{node.url}/{who}")
                        await page.wait_for_selector('body[data-ready="1"][data-state="live"]')
                        if who == "wallet":
                            await page.wait_for_selector("#pass img.qr")
                        else:
                            await page.fill("#c-find", "maya@example.org")
                            await page.press("#c-find", "Enter")
                            await page.wait_for_selector("#c-balance[data-available]")
                            for sku, name, price in (
                                ("latte", "Oat latte", "4.75"),
                                ("beans", "House beans 1 lb", "16.00"),
                            ):
                                await page.fill("#c-sku", sku)
                                await page.fill("#c-item", name)
                                await page.fill("#c-price", price)
                                await page.press("#c-price", "Enter")
                            await page.fill("#c-points", "120")
                            await page.click("#c-reserve")
                            await page.wait_for_selector("#c-commit:not([disabled])")
                        await page.wait_for_timeout(300)
                        out = DOCS / f"{who}.png"
                        await page.screenshot(path=str(out), full_page=True)
                        print(f"wrote {out}")
                        await browser.close()
                finally:
                    node.stop()
    finally:
        await runner.cleanup()
        await scratch.drop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
