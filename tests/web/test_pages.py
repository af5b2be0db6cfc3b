"""The pages as HTTP serves them: the security headers, the node's settings in the page and
nothing else from the request, caching, and the Origin check on /ws."""

from __future__ import annotations

import html
import json
import re

import aiohttp
import pytest

from gateway.settings import Settings
from gateway.web.pages import content_security_policy
from tests.support import RunningNode, running_node, settings_for


async def test_pages_come_with_a_policy_that_forbids_inline_script(rn: RunningNode, http):
    for path in ("/wallet", "/console"):
        async with http.get(rn.url + path) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            body = await resp.text()
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'" and "unsafe" not in csp
        assert directives["default-src"] == "'none'"
        assert directives["frame-ancestors"].startswith("'self'")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        # every script is a file of this node; none is inline
        assert re.findall(r"<script[^>]*>\s*</script>", body)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body)
        assert (
            " on" not in re.sub(r'"[^"]*"', "", body).lower().replace("\n", " ").split("<body")[0]
        )


async def test_the_page_is_told_the_nodes_settings_escaped(pg_dsn, redis_prefix, http):
    import dataclasses

    base = settings_for(pg_dsn, "redis://127.0.0.1:6379/0", "pg")
    extra = Settings.from_env(
        {
            "GATEWAY_ALLOWED_ORIGINS": "https://shop.example.com",
            "GATEWAY_PAGE_WS_URLS": "wss://gw-a.example.com/ws,wss://gw-b.example.com/ws",
            "GATEWAY_PAGE_TOKEN_URL": 'https://shop.example.com/loyalty/token?x="><script>',
        }
    )
    s = dataclasses.replace(
        base,
        session=dataclasses.replace(base.session, allowed_origins=extra.session.allowed_origins),
        web=extra.web,
    )
    async with (
        running_node(s, redis_prefix) as node,
        http.get(node.url + "/wallet?token=ignored") as resp,
    ):
        body = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    (raw,) = re.findall(r'<meta name="lg-config" content="([^"]*)">', body)
    assert "<script>" not in raw
    config = json.loads(html.unescape(raw))
    assert config == {
        "ws": ["wss://gw-a.example.com/ws", "wss://gw-b.example.com/ws"],
        "tokenUrl": 'https://shop.example.com/loyalty/token?x="><script>',
        "embedders": ["https://shop.example.com"],
    }
    assert "ignored" not in body  # nothing of the request's URL reaches the page
    assert "connect-src 'self' wss://gw-a.example.com/ws wss://gw-b.example.com/ws " in csp
    assert csp.count("https://shop.example.com") == 2  # token endpoint; frame-ancestors
    assert content_security_policy(s) == csp


async def test_static_files_revalidate_and_nothing_else_is_served(rn: RunningNode, http):
    async with http.get(rn.url + "/static/wallet.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"
        etag = resp.headers["ETag"]
        assert len(await resp.read()) > 1000
    async with http.get(rn.url + "/static/wallet.js", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    for path in ("/static/", "/static/../settings.py", "/static/wallet.html", "/static/x.js"):
        async with http.get(rn.url + path) as resp:
            assert resp.status == 404, path


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # a till, a server, an app: no Origin
        ("https://shop.example.com", True),  # allowed by the operator
        ("SELF", True),  # a page this node served
        ("https://evil.example.net", False),
        ("https://shop.example.com.evil.example.net", False),
        ("http://shop.example.com", False),  # another scheme is another origin
        ("null", False),  # a sandboxed frame, a file
    ],
)
async def test_ws_checks_the_origin_of_browser_pages(pg_dsn, redis_prefix, http, origin, allowed):
    import dataclasses

    base = settings_for(pg_dsn, "redis://127.0.0.1:6379/0", "or")
    s = dataclasses.replace(
        base,
        session=dataclasses.replace(base.session, allowed_origins=("https://shop.example.com",)),
    )
    async with running_node(s, redis_prefix) as node:
        headers = {} if origin is None else {"Origin": node.url if origin == "SELF" else origin}
        if allowed:
            async with http.ws_connect(node.url + "/ws", headers=headers) as ws:
                await ws.send_str('{"type":"ping","id":"1"}')
                reply = json.loads((await ws.receive()).data)
                assert reply["type"] == "error" and reply["code"] == "not_authenticated"
        else:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(node.url + "/ws", headers=headers)
            assert refused.value.status == 403
            async with http.get(
                node.url + "/ws",
                headers={**headers, "Upgrade": "websocket", "Connection": "Upgrade"},
            ) as resp:
                assert resp.status == 403
                assert (await resp.json())["error"] == "origin_forbidden"
            assert node.node.metrics.origin_refused._value.get() >= 1
