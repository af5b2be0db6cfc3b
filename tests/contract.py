"""The documents a test node is held to while a test drives it: every websocket reply against
``protocol.replies`` (what ``asyncapi.json`` says each command is answered with), every HTTP
response against ``openapi.json``. A reply outside them is recorded and fails the test at the
node's end, naming the command (or route), what it got, and what the documents allow.

Set ``LG_CONTRACT_LOG`` to a file to append every (command, reply) seen there, one JSON line
each: the measure of how much of the documents the suite exercises."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from gateway.api import openapi
from gateway.errors import GatewayError
from protocol import messages as m
from protocol import replies

#: Routes that are no API (the pages and their files, ``gateway.web``): not in OpenAPI.
PAGES_MODULE = "gateway.web"


def _what(reply: object) -> str:
    if isinstance(reply, m.Result):
        return f"result {type(reply.data).__name__}"
    if isinstance(reply, m.Error):
        return f"error {reply.code}"
    return type(reply).__name__


class Contract:
    """What one node answered that its documents do not allow."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self._log = os.environ.get("LG_CONTRACT_LOG")

    def _seen(self, kind: str, name: str, got: str) -> None:
        if self._log:
            with open(self._log, "a") as f:
                f.write(json.dumps({"kind": kind, "name": name, "got": got}) + "\n")

    def command(self, frame: object, reply: object) -> None:
        command = type(frame)
        self._seen("ws", command.__name__, _what(reply))
        if command in replies.REPLIES and not replies.allowed(command, reply):
            r = replies.REPLIES[command]
            self.violations.append(
                f"{command.__name__} answered {_what(reply)}; protocol/replies.py allows {r}"
            )

    def wrap(
        self, handle: Callable[[Any, object], Awaitable[object]]
    ) -> Callable[[Any, object], Awaitable[object]]:
        """The router's ``handle``, checking what it answers (a refusal raised as a
        ``GatewayError`` is answered as its ``error`` frame)."""

        async def checked(call: Any, frame: object) -> object:
            try:
                reply = await handle(call, frame)
            except GatewayError as exc:
                rid = getattr(frame, "id", None)
                self.command(frame, m.Error(id=rid, code=exc.code.value, message=exc.message))
                raise
            self.command(frame, reply)
            return reply

        return checked

    async def http(self, request: web.Request, response: web.StreamResponse) -> None:
        """An ``on_response_prepare`` signal: the response against the route's documented
        statuses, ``error`` codes and answer type."""
        route = request.match_info.route
        resource = route.resource
        handler = getattr(route, "handler", None)
        if resource is None or getattr(handler, "__module__", "").startswith(PAGES_MODULE):
            return  # no route matched (aiohttp's own 404/405), or a page
        path = resource.canonical
        method = "GET" if request.method == "HEAD" else request.method
        name = f"{method} {path}"
        self._seen("http", name, str(response.status))
        if path == "/ws" and response.status == 101:
            return
        try:
            answer, codes = openapi.documented(method, path, response.status)
        except KeyError:
            self.violations.append(f"{name} answered {response.status}: not in openapi.json")
            return
        body = getattr(response, "body", None)
        if not isinstance(body, bytes) or response.content_type != "application/json":
            return
        data = msgspec.json.decode(body)
        if codes is not None:
            code = data.get("error") if isinstance(data, dict) else None
            self._seen("http", name, f"{response.status} {code}")
            if code not in codes:
                self.violations.append(
                    f"{name} answered {response.status} {code!r}; openapi.json gives {codes}"
                )
        elif isinstance(answer, type):
            try:
                msgspec.convert(data, answer)
            except msgspec.ValidationError as exc:
                self.violations.append(f"{name} answered a body outside {answer.__name__}: {exc}")

    def assert_clean(self) -> None:
        assert not self.violations, "replies outside the documents:\n" + "\n".join(
            dict.fromkeys(self.violations)
        )
