"""What the page tests share: Debian's chromium driven by Playwright, a shop that embeds a page
and hands it a token the way a merchant's site does (its own page posts the token to the
frame, fetched from its own back end, never put in a URL), and two nodes that know each
other's origins."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Frame, Page, async_playwright

from loadtests.pages import CHROMIUM, FLAGS
from tests.support import RunningNode, free_port, running_node, settings_for

#: clients/web: the pages' sources and tools.
PAGES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "clients", "web"
)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("the page tests need chromium: apt-get install -y chromium (.ci/run does)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


_EMBED = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{title}</title></head>
<body style="margin:0">
<iframe id="lg" src="{src}" style="width:{width}px;height:{height}px;border:0"></iframe>
<script>
// The shop's own page: it answers the loyalty page's token request with a token from the
// shop's back end (after the shop's own login), and only to the loyalty page's origin.
const trusted = {origins};
addEventListener("message", async (e) => {{
  if (!trusted.includes(e.origin) || !e.data || e.data.type !== "loyalty:token-request") return;
  const r = await fetch("/token/{key}", {{ method: "POST" }});
  e.source.postMessage({{ type: "loyalty:token", token: await r.text() }}, e.origin);
}});
</script>
</body></html>
"""


@dataclass
class Shop:
    """A merchant's site on its own origin: ``/embed/{key}`` frames a loyalty page, and
    ``/token/{key}`` is its back end minting the token for whoever is logged in."""

    url: str
    embeds: dict[str, tuple[str, Callable[[], str]]] = field(default_factory=dict)
    token_requests: int = 0
    #: Origins the back end's token endpoint answers (CORS with credentials).
    cors: set[str] = field(default_factory=set)

    @property
    def origin(self) -> str:
        return self.url

    def embed(self, key: str, page_url: str, token: Callable[[], str]) -> str:
        self.embeds[key] = (page_url, token)
        return f"{self.url}/embed/{key}"

    async def _page(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        src, _ = self.embeds[key]
        origin = "/".join(src.split("/")[:3])
        body = _EMBED.format(
            title=html.escape(key),
            src=html.escape(src),
            key=key,
            origins=json.dumps([origin]),
            width=1100,
            height=1500,
        )
        return web.Response(text=body, content_type="text/html")

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        _, token = self.embeds[request.match_info["key"]]
        return web.Response(text=token())

    async def _login(self, request: web.Request) -> web.Response:
        """The shop's own login: a session cookie, nothing the loyalty page can read."""
        # a page of its own, as a shop's is, with its icon: else the browser asks the shop for
        # /favicon.ico, whose 404 may land in whichever page is open by then
        html = '<!doctype html><link rel="icon" href="data:,"><p>logged in</p>'
        resp = web.Response(text=html, content_type="text/html")
        resp.set_cookie("shop_session", request.match_info["key"], httponly=True, samesite="Lax")
        return resp

    async def _backend_token(self, request: web.Request) -> web.Response:
        """The back end's token endpoint for pages on the loyalty origin: the member of
        whoever the session cookie says is logged in, to an allowed origin only."""
        origin = request.headers.get("Origin", "")
        if origin not in self.cors:
            return web.Response(status=403)
        cors = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        key = request.cookies.get("shop_session")
        if key not in self.embeds:
            return web.json_response({"error": "not logged in"}, status=401, headers=cors)
        self.token_requests += 1
        return web.json_response({"token": self.embeds[key][1]()}, headers=cors)


@contextlib.asynccontextmanager
async def shop_server() -> AsyncIterator[Shop]:
    port = free_port()
    shop = Shop(f"http://127.0.0.1:{port}")
    app = web.Application()
    app.router.add_get("/embed/{key}", shop._page)
    app.router.add_post("/token/{key}", shop._token)
    app.router.add_get("/login/{key}", shop._login)
    app.router.add_post("/api/loyalty-token", shop._backend_token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield shop
    finally:
        await runner.cleanup()


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "/ws"


def page_env(own: int, others: list[int], shop: str) -> dict[str, str]:
    """The settings a node serving pages gets: every node's origin and the shop's allowed, its
    own /ws first among the page's websocket URLs."""
    ports = [own, *others]
    return {
        "GATEWAY_ALLOWED_ORIGINS": ",".join([shop, *(f"http://127.0.0.1:{p}" for p in ports)]),
        "GATEWAY_PAGE_WS_URLS": ",".join(f"ws://127.0.0.1:{p}/ws" for p in ports),
    }


@contextlib.asynccontextmanager
async def node_pair(
    pg_dsn: str, redis_url: str, prefix: str, shop: str
) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    """Nodes A and B in this process on one database and key space, each allowing the other's
    pages and the shop's."""
    from gateway.settings import Settings

    pa, pb = free_port(), free_port()
    nodes: list[RunningNode] = []
    async with contextlib.AsyncExitStack() as stack:
        for name, own, other in (("a", pa, pb), ("b", pb, pa)):
            base = settings_for(pg_dsn, redis_url, f"page-{name}")
            env = page_env(own, [other], shop)
            extra = Settings.from_env(env)
            s = dataclasses.replace(
                base,
                session=dataclasses.replace(
                    base.session, allowed_origins=extra.session.allowed_origins
                ),
                web=extra.web,
            )
            nodes.append(await stack.enter_async_context(running_node(s, prefix, own)))
        yield nodes[0], nodes[1]


async def frame_of(page: Page) -> Frame:
    """The loyalty page inside the shop's page, once its script has run."""
    handle = await page.wait_for_selector("iframe#lg")
    frame = await handle.content_frame()
    assert frame is not None
    return frame


async def ready(frame: Frame, timeout: float = 15_000) -> None:
    await frame.wait_for_selector('body[data-ready="1"][data-state="live"]', timeout=timeout)


async def text(frame: Frame, selector: str) -> str:
    return (await frame.text_content(selector)) or ""


def attr_is(selector: str, name: str, value: Any) -> str:
    return f'{selector}[data-{name}="{value}"]'


_PIXELS = """(sel) => {
  const img = document.querySelector(sel);
  const c = document.createElement("canvas");
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height);
  return { width: c.width, height: c.height, data: Array.from(d.data) };
}"""


async def read_qr(frame: Frame, selector: str) -> str:
    """The text of the QR code image at ``selector``, decoded from its pixels as a scanner
    would (clients/web/scripts/decode-qr.mjs, on the qr package's decoder)."""
    pixels = await frame.evaluate(_PIXELS, selector)
    proc = await asyncio.create_subprocess_exec(
        "node",
        os.path.join(PAGES_DIR, "scripts", "decode-qr.mjs"),
        cwd=PAGES_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(json.dumps(pixels).encode())
    assert proc.returncode == 0, err.decode()
    return out.decode()


class Tab:
    """A browser tab on the shop's page that frames a loyalty page; every console error and
    every page error is kept (a CSP violation shows as one) and must be none at the end."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on(
            "response", lambda r: r.status >= 400 and self.problems.append(f"{r.status} {r.url}")
        )

    async def open(self, url: str) -> Frame:
        await self.page.goto(url)
        frame = await frame_of(self.page)
        await ready(frame)
        return frame


@contextlib.asynccontextmanager
async def tab(browser: Browser, timezone_id: str | None = None) -> AsyncIterator[Tab]:
    context = await browser.new_context(
        viewport={"width": 1100, "height": 1500}, timezone_id=timezone_id
    )
    try:
        t = Tab(await context.new_page())
        yield t
        assert not t.problems, t.problems
    finally:
        await context.close()


async def shows_balance(
    frame: Frame, selector: str, available: int, timeout: float = 10_000
) -> None:
    try:
        await frame.wait_for_selector(f'{selector}[data-available="{available}"]', timeout=timeout)
    except Exception:
        body = await frame.evaluate("document.body.innerText")
        raise AssertionError(
            f"{selector} never showed {available}; the page shows:\n{body}"
        ) from None
