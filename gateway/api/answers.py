"""The admin API's answers, one way for every route module: a JSON body encoded by msgspec,
and a refusal in the shape openapi.json documents (``{"error": <code>, "message": ...}``)."""

from __future__ import annotations

import msgspec
from aiohttp import web


def json_answer(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def refusal(status: int, code: str, message: str) -> web.Response:
    return json_answer({"error": code, "message": message}, status)


__all__ = ["json_answer", "refusal"]
