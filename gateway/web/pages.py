"""Serving the pages: each HTML file is read once, given the node's page settings in a ``<meta>``
tag (JSON in an attribute, escaped: no inline script, so the Content-Security-Policy can forbid
all of it), and sent with headers that keep it where it belongs:

- ``Content-Security-Policy``: scripts and styles from this node only, no inline script, no
  ``eval``; connections to this node and the configured websocket and token URLs only; images
  from this node and ``data:`` (the QR codes are drawn on a canvas); framed only by this node
  and the allowed origins; no ``<base>``, no form posts elsewhere.
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.

Static files are the known few (no directory listing, no path from the request reaches the
file system) with a strong ``ETag``: a browser revalidates and gets ``304`` while unchanged.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from gateway.settings import Settings

#: The pages, by route, and the HTML file each is.
PAGES = {"/wallet": "wallet.html", "/console": "console.html"}
#: The files under /static/ and their content types.
ASSETS = {
    "wallet.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "pages.css": "text/css; charset=utf-8",
}
CONFIG_MARK = "{{config}}"


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _read(name: str) -> bytes:
    return resources.files("gateway.web").joinpath("static", name).read_bytes()


def _origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def content_security_policy(settings: Settings) -> str:
    connect = ["'self'", *settings.web.ws_urls]
    if settings.web.token_url:
        connect.append(_origin(settings.web.token_url))
    ancestors = ["'self'", *settings.session.allowed_origins]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src " + " ".join(dict.fromkeys(connect)),
            "frame-ancestors " + " ".join(dict.fromkeys(ancestors)),
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def page_config(settings: Settings) -> dict[str, object]:
    """What a page is told: where to connect, where to ask for a token, and which embedding
    origins may hand it one (``postMessage``)."""
    return {
        "ws": list(settings.web.ws_urls),
        "tokenUrl": settings.web.token_url,
        "embedders": list(settings.session.allowed_origins),
    }


class Pages:
    def __init__(self, settings: Settings) -> None:
        config = html.escape(orjson.dumps(page_config(settings)).decode(), quote=True)
        self._files: dict[str, _File] = {}
        for route, name in PAGES.items():
            text = _read(name).decode()
            assert CONFIG_MARK in text, name
            self._files[route] = self._file(
                text.replace(CONFIG_MARK, config).encode(), "text/html; charset=utf-8"
            )
        for name, kind in ASSETS.items():
            self._files["/static/" + name] = self._file(_read(name), kind)
        self._headers = {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }

    @staticmethod
    def _file(body: bytes, content_type: str) -> _File:
        return _File(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def setup(self, app: web.Application) -> None:
        for path in self._files:
            app.router.add_get(path, self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        f = self._files[request.path]
        headers = {**self._headers, "ETag": f.etag}
        if request.headers.get("If-None-Match") == f.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=f.body, content_type=None, headers={**headers, "Content-Type": f.content_type}
        )
