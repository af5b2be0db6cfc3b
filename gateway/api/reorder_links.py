"""The public routes of the reorder messages' links (no token: the link is signed,
``gateway.reorder.LinkSigner``): the reorder page of a cart link (``GET /reorder/{token}``:
the product, the incentive, and a link on to the shop's pre-filled cart; the click is
recorded), and the one-click unsubscribe of RFC 8058 (``POST /reorder/unsubscribe/{token}``
withdraws that channel's consent at once; ``GET`` shows a page with the button, and changes
nothing, as the RFC asks: mail scanners follow links).

The pages are text only, served with a Content-Security-Policy that allows nothing but a
form posting back to the node; a refused link answers a page that says why (400: not a link
the gateway signed, or altered; 410: expired)."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from gateway.reorder import Carts, LinkRefused, Outbox

#: Nothing loads, nothing frames the page; its one form posts back to the node.
CSP = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

_REFUSED = {
    "invalid": (400, "This link is not valid", "It was not sent by us, or it was changed."),
    "expired": (410, "This link has expired", "Ask the shop for a new one."),
}


def page(
    status: int, title: str, text: str, form: str | None = None, link: str | None = None
) -> web.Response:
    button = (
        f'<form method="post" action="{html.escape(form)}">'
        '<button type="submit">Unsubscribe</button></form>'
        if form is not None
        else ""
    )
    if link is not None:
        button += f'<p><a href="{html.escape(link)}" rel="noreferrer">Continue to the shop</a></p>'

    body = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p>{button}</html>"
    )
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def refused(exc: LinkRefused) -> web.Response:
    return page(*_REFUSED[exc.reason])


class ReorderLinks:
    def __init__(self, outbox: Outbox, carts: Carts) -> None:
        self._outbox = outbox
        self._carts = carts

    def setup(self, app: web.Application) -> None:
        app.router.add_get("/reorder/unsubscribe/{token}", self.unsubscribe_page)
        app.router.add_post("/reorder/unsubscribe/{token}", self.unsubscribe)
        app.router.add_get("/reorder/{token}", self.cart)

    async def cart(self, request: web.Request) -> web.Response:
        try:
            view = await self._carts.open(
                request.match_info["token"], request.headers.get("User-Agent", "")
            )
        except LinkRefused as exc:
            return refused(exc)
        text = f"Time to restock: {view.product} (x{view.qty})."
        if view.incentive:
            text += f" Reorder now and get {view.incentive}."
        if view.shop_url is None:
            text += " Reorder it at the shop, in store or online."
        return page(200, f"Reorder {view.product}", text, link=view.shop_url)

    async def unsubscribe_page(self, request: web.Request) -> web.Response:
        return page(
            200,
            "Unsubscribe",
            "Press the button to stop these messages.",
            form=request.path,
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        try:
            _, channel = await self._outbox.unsubscribe(request.match_info["token"])
        except LinkRefused as exc:
            return refused(exc)
        what = "emails" if channel == "email" else "text messages"
        return page(200, "You are unsubscribed", f"You will get no more marketing {what} from us.")


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


# A refusal is a page for people (text/html), not an API error: no ErrorBody.
_REFUSALS = {
    "400": {"description": "Not a link the gateway signed, or altered: an HTML page says so"},
    "410": {"description": "The link has expired: an HTML page says so"},
}

_TOKEN = [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}]

#: The routes' documents (openapi.json): public, no token.
PATHS: dict[str, Any] = {
    "/reorder/{token}": {
        "get": {
            "security": [],
            "parameters": _TOKEN,
            "summary": "The reorder page of a reminder's signed cart link: the product, the "
            "incentive and a link on to the shop's pre-filled cart (the loop's cart_url); the "
            "click is recorded (docs/reorder.md)",
            "operationId": "get_reorder_cart",
            "responses": {"200": _html("The page"), **_REFUSALS},
        },
    },
    "/reorder/unsubscribe/{token}": {
        "get": {
            "security": [],
            "parameters": _TOKEN,
            "summary": "The unsubscribe page of a reorder email's link: a button that posts "
            "back; changes nothing by itself (RFC 8058: mail scanners follow links)",
            "operationId": "get_reorder_unsubscribe",
            "responses": {"200": _html("The page")},
        },
        "post": {
            "security": [],
            "parameters": _TOKEN,
            "summary": "One-click unsubscribe (RFC 8058, List-Unsubscribe-Post): withdraws "
            "the member's consent for the link's channel at once (docs/reorder.md)",
            "operationId": "post_reorder_unsubscribe",
            "responses": {"200": _html("Unsubscribed"), **_REFUSALS},
        },
    },
}

#: The statuses each route answers (tests/contract.py checks them).
ANSWERS: dict[tuple[str, str], dict[int, Any]] = {
    ("GET", "/reorder/{token}"): {200: None, 400: None, 410: None},
    ("GET", "/reorder/unsubscribe/{token}"): {200: None},
    ("POST", "/reorder/unsubscribe/{token}"): {200: None, 400: None, 410: None},
}

__all__ = ["ANSWERS", "CSP", "PATHS", "ReorderLinks", "page", "refused"]
