"""``POST /admin/broadcast``: a ``notice`` to every live session of one merchant, on every node
(``gateway.fanout.broadcast`` delivers it)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.api.admin import audit_write
from gateway.errors import StoreUnavailable
from gateway.fanout import MAX_NOTICE_BYTES, publish_notice
from gateway.merchant_keys import ANY_MERCHANT, MerchantKeys, admin_reach
from gateway.store.keys import Keys
from gateway.store.redis import Redis
from protocol.codec import encode
from protocol.limits import Id


class BroadcastRequest(msgspec.Struct, kw_only=True, frozen=True):
    merchant: Id
    kind: Id = "notice"
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    notice: Id | None = None
    """Optional id chosen by the caller (e.g. the offer id); one is generated otherwise."""


_request_decoder = msgspec.json.Decoder(BroadcastRequest)


class Broadcasts:
    """The endpoint, with what it needs: Redis and the keys to publish on, and the tokens that
    may use it: the operator's admin token, or one of the named merchant's admin tokens (any
    other merchant is answered as an unknown one: 404)."""

    def __init__(
        self, redis: Redis, keys: Keys, admin_token: str, merchant_keys: MerchantKeys
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._admin_token = admin_token
        self._merchant_keys = merchant_keys

    async def post(self, request: web.Request) -> web.Response:
        """Body ``{"merchant": ..., "kind": "offer", "payload": {...}}``."""
        reach = admin_reach(
            request.headers.get("Authorization", ""), self._admin_token, self._merchant_keys
        )
        if reach is None:
            return web.json_response(
                {"error": "unauthorized", "message": "a valid admin bearer token is required"},
                status=401,
            )
        resp, merchant = await self._publish(request, reach)
        audit_write(request, reach, resp.status, merchant)
        return resp

    async def _publish(self, request: web.Request, reach: str) -> tuple[web.Response, str | None]:
        """The answer, and the merchant the body named (None when it could not be read)."""
        body = await request.read()
        try:
            req = _request_decoder.decode(body)
        except msgspec.DecodeError as exc:
            return web.json_response(
                {"error": "invalid_field", "message": str(exc)}, status=400
            ), None
        if reach not in (ANY_MERCHANT, req.merchant):
            return web.json_response(
                {"error": "not_found", "message": "no such merchant"}, status=404
            ), req.merchant
        if len(encode(req.payload)) > MAX_NOTICE_BYTES:
            return web.json_response(
                {"error": "invalid_field", "message": f"payload above {MAX_NOTICE_BYTES} bytes"},
                status=400,
            ), req.merchant
        try:
            notice, nodes = await publish_notice(
                self._redis, self._keys, req.merchant, req.kind, req.payload, req.notice
            )
        except StoreUnavailable as exc:  # retryable; after a timeout it may have gone out already
            return web.json_response(
                {"error": "unavailable", "message": exc.message, "retryable": True}, status=503
            ), req.merchant
        return web.json_response(
            {"notice": notice.notice, "at": notice.at, "nodes": nodes}
        ), req.merchant
