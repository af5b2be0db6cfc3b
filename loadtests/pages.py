"""``python -m loadtests pages``: the wallet page's speed, measured in a real browser.

Two local nodes on a scratch database: the register's session on node A, the wallet page
served by node B and connected to it (so every change crosses nodes, as at a shop). Headless
chromium (Debian's, driven by Playwright) opens the page the way a web shop would, with its
token fetched from a back end (a small endpoint here), and the bench measures:

- **sale → DOM**: for each of ``--sales`` sales (one at a time, ``--gap`` apart), the moment the
  register's reply arrived (wall clock, this process) against the moment the page's balance
  element showed that sale's balance version (wall clock, inside the page: a
  ``MutationObserver`` installed before the page's own script, reading
  ``performance.timeOrigin + performance.now()``). Both clocks are this machine's. A negative
  value means the page showed the change before the register had its reply.
- **first render**: from the page's websocket opening to the wallet view on screen
  (``body[data-ready]``), inside the page, over ``--loads`` fresh page loads.
- **script shipped**: each page's bundle, gzipped.

Nothing in the product is instrumented for this: the observer comes with the bench. The
speed probe is read before each stage; quote figures with it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import sys
import time
import uuid
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from loadtests.nodes import Node, Scratch, free_port
from loadtests.report import emit
from loadtests.speed import probe_ms

#: Debian's chromium (Playwright's own browser downloads are not used): ``CHROMIUM`` overrides.
CHROMIUM = (
    os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
#: Flags for a headless browser in a container: no sandbox (no user namespaces), no GPU,
#: nothing fetched in the background.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

#: Installed before the page's scripts: when each balance version reached the DOM, and when
#: the socket opened and the first view was on screen.
_OBSERVER = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const log = (window.__bench = { versions: {}, opened: null, ready: null });
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(...a) {
      super(...a);
      this.addEventListener("open", () => { if (log.opened === null) log.opened = now(); });
    }
  };
  new MutationObserver((records) => {
    const t = now();
    for (const r of records) {
      const el = r.target;
      if (el.id === "balance" && el.dataset.version && !(el.dataset.version in log.versions))
        log.versions[el.dataset.version] = t;
      if (el === document.body && el.dataset.ready && log.ready === null) log.ready = t;
    }
  }).observe(document, { attributes: true, subtree: true, attributeFilter: ["data-version", "data-ready"] });
})();
"""


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def _summary(values: list[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": round(_pct(values, 50), 2),
        "p99": round(_pct(values, 99), 2),
        "max": round(max(values), 2) if values else float("nan"),
        "min": round(min(values), 2) if values else float("nan"),
    }


def bundle_sizes() -> dict[str, int]:
    static = resources.files("gateway.web").joinpath("static")
    return {
        name: len(gzip.compress(static.joinpath(name).read_bytes(), 9))
        for name in ("wallet.js", "console.js")
    }


async def _token_server(token: str, origin: str) -> tuple[web.AppRunner, str]:
    async def issue(request: web.Request) -> web.Response:
        cors = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        return web.json_response({"token": token}, headers=cors)

    app = web.Application()
    app.router.add_post("/token", issue)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/token"


class _Till:
    """The register: one websocket session on node A, sales one at a time."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.n = 0

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        rid = str(self.n)
        await self.ws.send_str(json.dumps({**frame, "id": rid}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == rid:
                return msg


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from gateway import auth
    from gateway.settings import DEV_JWT_SECRET
    from loadtests.seed import seed

    if CHROMIUM is None:
        raise SystemExit("python -m loadtests pages: chromium is needed (apt-get install chromium)")
    scratch = Scratch(args.database_url, args.redis_url)
    await scratch.create()
    probes: dict[str, float] = {}
    try:
        seeded = await seed(scratch.dsn, 1, 0, f"pages-{uuid.uuid4().hex[:6]}")
        merchant, member = seeded.merchant, seeded.members[0]
        a_port, b_port = free_port(), free_port()
        b_origin = f"http://127.0.0.1:{b_port}"
        token = auth.mint_app(DEV_JWT_SECRET, merchant, member, 3600, "web")
        runner, token_url = await _token_server(token, b_origin)
        env = {
            "GATEWAY_ALLOWED_ORIGINS": b_origin,
            "GATEWAY_PAGE_WS_URLS": f"ws://127.0.0.1:{b_port}/ws",
            "GATEWAY_PAGE_TOKEN_URL": token_url,
            "GATEWAY_LEDGER_LANES": "1",
        }
        a = Node(scratch, "pages-a", env, port=a_port)
        b = Node(scratch, "pages-b", env, port=b_port)
        try:
            await asyncio.gather(a.wait_ready(), b.wait_ready())
            async with (
                async_playwright() as pw,
                aiohttp.ClientSession() as http,
                http.ws_connect(a.url.replace("http", "ws") + "/ws") as ws,
            ):
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                till = _Till(ws)
                hello = await till.request(
                    {
                        "type": "hello",
                        "versions": [1],
                        "token": auth.mint_pos(DEV_JWT_SECRET, merchant, "s1", "bench", 3600),
                    }
                )
                assert hello["type"] == "welcome", hello
                # first render, over fresh loads (a new browser context each: nothing cached)
                probes["first_render"] = probe_ms()
                renders = []
                for _ in range(args.loads):
                    ctx = await browser.new_context()
                    await ctx.add_init_script(_OBSERVER)
                    page = await ctx.new_page()
                    await page.goto(f"{b.url}/wallet")
                    await page.wait_for_selector('body[data-ready="1"]')
                    log = await page.evaluate("window.__bench")
                    renders.append(log["ready"] - log["opened"])
                    await ctx.close()
                # sale -> DOM on one page
                ctx = await browser.new_context()
                await ctx.add_init_script(_OBSERVER)
                page = await ctx.new_page()
                await page.goto(f"{b.url}/wallet")
                await page.wait_for_selector('body[data-ready="1"][data-state="live"]')
                await asyncio.sleep(0.5)
                probes["sale_to_dom"] = probe_ms()
                replies: dict[str, float] = {}
                sent: dict[str, float] = {}
                for i in range(args.sales):
                    t0 = time.time() * 1000
                    reply = await till.request(
                        {
                            "type": "sale",
                            "op": f"bench-{uuid.uuid4().hex}",
                            "member": member,
                            "total": 100 + i,
                        }
                    )
                    t1 = time.time() * 1000
                    version = str(reply["data"]["balance"]["version"])
                    sent[version], replies[version] = t0, t1
                    await asyncio.sleep(args.gap)
                last = max(replies, key=int)
                await page.wait_for_selector(f'#balance[data-version="{last}"]', timeout=10_000)
                log = await page.evaluate("window.__bench")
                shown = log["versions"]
                after_reply = [shown[v] - replies[v] for v in replies if v in shown]
                after_send = [shown[v] - sent[v] for v in sent if v in shown]
                register = [replies[v] - sent[v] for v in sent]
                await ctx.close()
                await browser.close()
        finally:
            a.stop()
            b.stop()
            await runner.cleanup()
    finally:
        await scratch.drop()
    return {
        "sales": args.sales,
        "gap_s": args.gap,
        "shown": len(after_reply),
        "missing": args.sales - len(after_reply),
        "sale_reply_to_dom_ms": _summary(after_reply),
        "sale_sent_to_dom_ms": _summary(after_send),
        "register_reply_ms": _summary(register),
        "first_render_ms": _summary(renders),
        "script_gzip_bytes": bundle_sizes(),
        "speed_probe_ms": probes,
    }


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--sales", type=int, default=300, help="sales timed on the page")
    p.add_argument("--gap", type=float, default=0.05, help="seconds between sales")
    p.add_argument("--loads", type=int, default=20, help="fresh page loads timed")
    p.add_argument("--json", help="also write the figures to this file")


def main(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args))
    emit(result, args.json)
    return 0 if result["missing"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m loadtests.pages")
    add_flags(parser)
    sys.exit(main(parser.parse_args()))
