"""The TypeScript client (clients/js) against real gateway nodes: this test starts two node
processes on the test database and a private Redis, a merchant with a reward, a real SMTP
server for verification codes, and a small control HTTP server; then it runs the client's
vitest suite (`npm test`), which drives the world through the control server (members,
tokens, sales at a register, killing, restarting and freezing a node, member event counters,
a lost pub/sub connection), and fails if that suite fails.

The Redis is private so that dropping its pub/sub connections (the ``refetch`` case) touches
no other test's nodes. Nodes run with a 1 s heartbeat, no token leeway and a resume depth of
3 changes, so expiry, liveness and ``recovered=false`` happen within a test's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway import auth
from gateway.store.keys import Keys
from protocol.messages import Result
from tests.conftest import unique
from tests.loyalty_support import add_reward, new_merchant, phone
from tests.servers import PrivateRedis, SmtpServer
from tests.support import SECRET, NodeProcess, WsClient, free_port, pos_token

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
HEARTBEAT_S = 1
MAX_RECOVERY = 3
REWARD = "ten-off"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class World:
    """Two nodes, their Redis, a merchant; what the control server does to them."""

    def __init__(self, pg_dsn: str, redis: PrivateRedis, smtp: SmtpServer, merchant: str) -> None:
        self.pg_dsn = pg_dsn
        self.redis = redis
        self.smtp = smtp
        self.merchant = merchant
        self.prefix = unique("lgjs")
        self.keys = Keys(self.prefix)
        self.nodes: list[NodeProcess] = []
        self.state: list[str] = []  # up, down, frozen
        self.http = aiohttp.ClientSession()

    def _node(self, i: int, port: int | None = None) -> NodeProcess:
        env = {
            "GATEWAY_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
            "GATEWAY_TOKEN_LEEWAY": "0",
            "GATEWAY_MAX_RECOVERY": str(MAX_RECOVERY),
            "GATEWAY_SMTP_URL": self.smtp.url,
        }
        if port is not None:
            env["GATEWAY_PORT"] = str(port)
        node = NodeProcess(self.pg_dsn, self.redis.url, self.prefix, f"js-{i}", env)
        if port is not None:
            node.port, node.url = port, f"http://127.0.0.1:{port}"
        return node

    async def start(self) -> None:
        self.nodes = [self._node(0), self._node(1)]
        self.state = ["up", "up"]
        for n in self.nodes:
            await n.wait_ready()

    async def stop(self) -> None:
        for i, n in enumerate(self.nodes):
            if self.state[i] == "frozen":
                n.proc.send_signal(signal.SIGCONT)
            if self.state[i] != "down":
                n.kill()
        await self.http.close()

    def ws_urls(self) -> list[str]:
        return [n.url.replace("http://", "ws://") + "/ws" for n in self.nodes]

    @contextlib.asynccontextmanager
    async def till(self) -> AsyncIterator[WsClient]:
        """A register's session on a node that answers."""
        i = self.state.index("up")
        c = await WsClient.connect(self.http, self.nodes[i].url)
        try:
            await c.hello(pos_token(self.merchant, "s1", unique("t")))
            yield c
        finally:
            await c.close()

    async def ok(self, frame: dict[str, Any]) -> Any:
        async with self.till() as t:
            reply = await t.request(frame)
        if not isinstance(reply, Result):
            raise web.HTTPConflict(text=json.dumps({"code": reply.code, "message": reply.message}))
        return reply.data

    # -- the control API: each takes the JSON body and returns a JSON-able answer

    async def member(self, body: dict[str, Any]) -> Any:
        email = f"{unique('js')}@example.com"
        m = (
            await self.ok({"type": "enrol", "phone": phone(), "email": email, "name": "Ada"})
        ).member
        points = int(body.get("points", 1000))
        if points:
            await self.ok(
                {"type": "sale", "op": unique("seed"), "member": m, "total": points * 100}
            )
        return {"member": m, "email": email}

    async def token(self, body: dict[str, Any]) -> Any:
        ttl = float(body.get("ttl", 3600))
        return {"token": auth.mint_app(SECRET, self.merchant, body["member"], ttl)}

    async def sale(self, body: dict[str, Any]) -> Any:
        op = unique("sale")
        total = int(body.get("total", 1000))
        r = await self.ok({"type": "sale", "op": op, "member": body["member"], "total": total})
        return {"op": op, "version": r.balance.version, "available": r.balance.available}

    async def profile(self, body: dict[str, Any]) -> Any:
        r = await self.ok(
            {"type": "update_profile", "member": body["member"], "name": body["name"]}
        )
        return {"name": r.name}

    async def use_code(self, body: dict[str, Any]) -> Any:
        r = await self.ok({"type": "use_code", "op": unique("use"), "code": body["code"]})
        return {"status": r.status}

    async def event_seq(self, body: dict[str, Any]) -> Any:
        """Move the member's event counter: ``skip`` numbers past one event that is never
        sent (the next one is a gap); ``reset`` forgets it (as a Redis that lost its data)."""
        r = aioredis.Redis.from_url(self.redis.url)
        try:
            key = self.keys.member_events_seq(body["member"])
            if body["action"] == "skip":
                return {"seq": await r.incr(key)}
            await r.delete(key)
            return {"seq": 0}
        finally:
            await r.aclose()

    async def drop_pubsub(self, body: dict[str, Any]) -> Any:
        """Drop every node's pub/sub connections: each node then tells its watchers to refetch."""
        r = aioredis.Redis.from_url(self.redis.url)
        try:
            return {"killed": await r.client_kill_filter(_type="pubsub")}
        finally:
            await r.aclose()

    async def node(self, body: dict[str, Any]) -> Any:
        i, action = int(body["node"]), body["action"]
        n = self.nodes[i]
        if action == "kill" and self.state[i] != "down":
            if self.state[i] == "frozen":
                n.proc.send_signal(signal.SIGCONT)
            n.kill()
            self.state[i] = "down"
        elif action == "start" and self.state[i] == "down":
            self.nodes[i] = self._node(i, n.port)
            await self.nodes[i].wait_ready()
            self.state[i] = "up"
        elif action == "freeze" and self.state[i] == "up":
            n.proc.send_signal(signal.SIGSTOP)
            self.state[i] = "frozen"
        elif action == "thaw" and self.state[i] == "frozen":
            n.proc.send_signal(signal.SIGCONT)
            self.state[i] = "up"
        return {"state": self.state}

    async def mail(self, body: dict[str, Any]) -> Any:
        return {"codes": self.smtp.codes_to(body["to"])}


@contextlib.asynccontextmanager
async def control_server(world: World) -> AsyncIterator[str]:
    routes: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
        "member": world.member,
        "token": world.token,
        "sale": world.sale,
        "profile": world.profile,
        "use_code": world.use_code,
        "event_seq": world.event_seq,
        "drop_pubsub": world.drop_pubsub,
        "node": world.node,
        "mail": world.mail,
    }
    lock = asyncio.Lock()  # one change of the world at a time, as a test expects

    async def handle(request: web.Request) -> web.Response:
        action = routes.get(request.match_info["action"])
        if action is None:
            raise web.HTTPNotFound()
        body = await request.json() if request.can_read_body else {}
        async with lock:
            return web.json_response(await action(body))

    app = web.Application()
    app.router.add_post("/{action}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_typescript_client_against_real_nodes(pg_dsn: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (the TypeScript client needs Node 20 and npm)")
    assert (JS / "node_modules").is_dir(), "clients/js/node_modules missing: run make install-js"
    merchant = await new_merchant(pg_dsn)
    await add_reward(pg_dsn, merchant, REWARD, 500, 1000, "$10 off")
    redis = PrivateRedis()
    redis.start()
    try:
        with SmtpServer() as smtp:
            world = World(pg_dsn, redis, smtp, merchant)
            try:
                await world.start()
                async with control_server(world) as control:
                    env = {
                        **os.environ,
                        "LG_CONTROL": control,
                        "LG_NODES": ",".join(world.ws_urls()),
                        "LG_NODE_IDS": "js-0,js-1",
                        "LG_MERCHANT": merchant,
                        "LG_REWARD": REWARD,
                        "LG_HEARTBEAT_MS": str(HEARTBEAT_S * 1000),
                        "LG_MAX_RECOVERY": str(MAX_RECOVERY),
                        "NO_COLOR": "1",
                    }
                    # JS_TEST_ARGS: vitest's own, e.g. "-t wallet" to run some tests only.
                    args = os.environ.get("JS_TEST_ARGS", "").split()
                    proc = await asyncio.create_subprocess_exec(
                        npm,
                        "test",
                        *(["--", *args] if args else []),
                        cwd=JS,
                        env=env,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                    try:
                        out, _ = await asyncio.wait_for(proc.communicate(), 840)
                    except TimeoutError:
                        proc.kill()
                        out, _ = await proc.communicate()
                        pytest.fail("npm test did not finish in 840 s:\n" + out.decode())
            finally:
                await world.stop()
    finally:
        redis.stop()
    text = out.decode(errors="replace")
    print(text)
    assert proc.returncode == 0, f"npm test exited with {proc.returncode}:\n{text}"
