"""The webhooks' fixtures: a real local HTTP receiver (an aiohttp server on a free port) and a
node that delivers to it (private addresses allowed, short backoff, a fast poll)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.settings import Settings, WebhookSettings
from tests.conftest import REDIS_URL, TIME_FACTOR
from tests.loyalty_support import Clients, admin, new_merchant
from tests.support import RunningNode, free_port, running_node, settings_for

DOC = Path(__file__).parents[2] / "docs" / "webhooks.md"


def doc_verify() -> Callable[..., bool]:
    """The Python verification snippet of docs/webhooks.md, run as the guide has it."""
    text = DOC.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None
    scope: dict[str, Any] = {}
    exec(block.group(1), scope)
    return scope["verify"]  # type: ignore[no-any-return]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 200

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """An HTTP server that records every POST and answers as ``answer`` says (a status, or a
    delay in seconds before a 200 as ``("sleep", s)``), per path."""

    url: str = ""
    got: list[Received] = field(default_factory=list)
    answers: dict[str, list[Any]] = field(default_factory=dict)
    #: Per path: called for each request, its answer (overrides ``answers``).
    policy: dict[str, Callable[[], Any]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: Every request as it arrives (before its answer), by path.
    started: list[str] = field(default_factory=list)

    def at(self, path: str) -> str:
        return self.url + path

    def of(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]

    def ok(self, path: str) -> list[Received]:
        """The deliveries to ``path`` it answered 2xx."""
        return [r for r in self.got if r.path == path and r.status < 300]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.started.append(request.path)
        plan = self.answers.get(request.path) or []
        answer = plan.pop(0) if len(plan) > 1 else (plan[0] if plan else 200)
        if request.path in self.policy:
            answer = self.policy[request.path]()
        if isinstance(answer, tuple):
            await asyncio.sleep(answer[1])
            answer = 200
        self.got.append(Received(request.path, dict(request.headers), body, answer))
        self.arrived.set()
        return web.Response(status=answer, text="ok")

    async def wait_for(
        self, count: int, path: str | None = None, timeout: float = 10.0
    ) -> list[Received]:
        """The first ``count`` deliveries answered 2xx (to ``path``, if given)."""
        deadline = asyncio.get_running_loop().time() + timeout * TIME_FACTOR
        while True:
            got = [r for r in self.got if r.status < 300 and path in (None, r.path)]
            if len(got) >= count:
                return got
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"{len(got)} of {count} deliveries arrived")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(left, 0.2))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", r.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    r.url = f"http://127.0.0.1:{port}"
    yield r
    await runner.cleanup()


def hook_settings(pg_dsn: str, node_id: str = "wh", **hooks: Any) -> Settings:
    base = settings_for(pg_dsn, REDIS_URL, node_id)
    w = WebhookSettings(
        poll_seconds=0.05,
        timeout=1.0,
        concurrency=8,
        backoff=0.05,
        backoff_max=0.2,
        retry_seconds=30.0,
        allow_private=True,
    )
    return replace(base, webhooks=replace(w, **hooks))


@pytest.fixture
async def wn(pg_dsn: str, redis_prefix: str) -> AsyncIterator[RunningNode]:
    """A node that delivers webhooks to local receivers quickly."""
    async with running_node(hook_settings(pg_dsn), redis_prefix) as node:
        yield node


@pytest.fixture
async def tills(http: Any, wn: RunningNode) -> AsyncIterator[Clients]:
    """POS sessions on ``wn``."""
    c = Clients(http, wn.url)
    yield c
    await c.close()


@pytest.fixture
async def other_merchant(pg_dsn: str) -> str:
    return await new_merchant(pg_dsn)


async def hook(http: Any, node: RunningNode, merchant: str, url: str, **body: Any) -> Any:
    """A new endpoint of ``merchant`` (points.changed unless ``events`` says)."""
    body.setdefault("events", ["points.changed"])
    status, reply = await admin(
        http,
        "POST",
        f"{node.url}/admin/v1/merchants/{merchant}/webhooks",
        json={"url": url, **body},
    )
    assert status == 201, reply
    return reply


async def deliveries(
    http: Any, node: RunningNode, merchant: str, webhook: str, query: str = ""
) -> list[Any]:
    status, page = await admin(
        http,
        "GET",
        f"{node.url}/admin/v1/merchants/{merchant}/webhooks/{webhook}/deliveries?{query}",
    )
    assert status == 200, page
    return page["deliveries"]  # type: ignore[no-any-return]
