"""Test helpers: run real gateway nodes (in this process or as subprocesses) and a small
websocket client built on the protocol package."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from gateway import auth
from gateway.app import NODE, Node, build_app
from gateway.settings import DEV_JWT_SECRET, Settings
from protocol import codec
from protocol.messages import BalanceChanged, Error, Result, Welcome
from tests.contract import Contract

SECRET = DEV_JWT_SECRET


def free_port() -> int:
    """A port to listen on, chosen below the ephemeral range: a port that the kernel hands out
    for ``bind(0)`` can be taken again at once by any outgoing connection's local end, which a
    test with hundreds of client sockets makes likely."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    start, stop = max(1024, low - 12000), max(2048, low - 1000)
    for _ in range(200):
        port = random.randrange(start, stop)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def settings_for(pg_dsn: str, redis_url: str, node_id: str = "t", **session: Any) -> Settings:
    base = Settings.from_env(
        {
            "DATABASE_URL": pg_dsn,
            "REDIS_URL": redis_url,
            "GATEWAY_NODE_ID": node_id,
            "GATEWAY_DRAIN_SECONDS": "2",
            "GATEWAY_SWEEP_SECONDS": "0.2",
            "GATEWAY_RELAY_SECONDS": "0.2",
            "GATEWAY_RELAY_MIN_AGE": "0.5",
            # A node embedded in the pytest process must not freeze that process's heap: the
            # test loop (plain asyncio) leaves its closed transports to the cyclic collector,
            # and frozen they would never be reclaimed. Node processes (NodeProcess) run the
            # policy as deployed; tests/test_collector.py checks its mechanics.
            "GATEWAY_GC_FREEZE_SECONDS": "0",
        }
    )
    if session:
        base = replace(base, session=replace(base.session, **session))
    return base


class RunningNode:
    def __init__(self, runner: web.AppRunner, url: str, node: Node) -> None:
        self.runner = runner
        self.url = url
        self.node = node

    async def stop(self) -> None:
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def running_node(
    settings: Settings, prefix: str, port: int | None = None
) -> AsyncIterator[RunningNode]:
    app = build_app(settings, prefix)
    contract = Contract()
    node = app[NODE]
    node.router.handle = contract.wrap(node.router.handle)  # type: ignore[method-assign]
    app.on_response_prepare.append(contract.http)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    rn = RunningNode(runner, f"http://127.0.0.1:{port}", node)
    try:
        yield rn
    finally:
        await runner.cleanup()
    contract.assert_clean()  # only when the test itself passed: its own failure comes first


class NodeProcess:
    """A gateway node as a real subprocess (``python -m gateway serve``)."""

    def __init__(
        self,
        pg_dsn: str,
        redis_url: str,
        prefix: str,
        node_id: str,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": pg_dsn,
                "REDIS_URL": redis_url,
                "GATEWAY_REDIS_PREFIX": prefix,
                "GATEWAY_PORT": str(self.port),
                "GATEWAY_NODE_ID": node_id,
                "GATEWAY_DRAIN_SECONDS": "3",
                "GATEWAY_SWEEP_SECONDS": "0.2",
                "GATEWAY_RELAY_SECONDS": "0.2",
                "GATEWAY_RELAY_MIN_AGE": "0.5",
                "GATEWAY_LOG_LEVEL": "WARNING",
            }
        )
        env.update(extra_env or {})
        # A file, not a pipe: a pipe nobody reads can fill and stall the node.
        self.log = tempfile.NamedTemporaryFile(prefix=f"lg-{node_id}-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited with {self.proc.returncode}: {self.output()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError("node did not become ready")

    def output(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()[-4000:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self.log.close()
        return code


class WsClient:
    """Minimal client: sends protocol frames, correlates replies, collects pushes."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.replies: dict[str, asyncio.Future[Any]] = {}
        self.pushes: asyncio.Queue[Any] = asyncio.Queue()
        self.frames: list[Any] = []
        self.close_code: int | None = None
        self._n = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> WsClient:
        ws = await http.ws_connect(url + "/ws", autoping=True, max_msg_size=0)
        return cls(ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = codec.decode_server(msg.data)
            self.frames.append(frame)
            rid = getattr(frame, "id", None)
            if isinstance(frame, Result | Error | Welcome) and rid in self.replies:
                fut = self.replies.pop(rid)
                if not fut.done():
                    fut.set_result(frame)
            else:
                self.pushes.put_nowait(frame)
        self.close_code = self.ws.close_code
        for fut in self.replies.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed with {self.close_code}"))

    def next_id(self) -> str:
        self._n += 1
        return f"r{self._n}"

    async def request(self, frame: dict[str, Any], timeout: float = 10.0) -> Any:
        frame = dict(frame)
        rid = frame.setdefault("id", self.next_id())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        await self.ws.send_str(codec.encode(frame).decode())
        return await asyncio.wait_for(fut, timeout)

    async def send_raw(self, data: str) -> None:
        await self.ws.send_str(data)

    async def hello(self, token: str, versions: list[int] | None = None) -> Any:
        return await self.request({"type": "hello", "versions": versions or [1], "token": token})

    async def next_change(self, timeout: float = 5.0) -> BalanceChanged:
        while True:
            frame = await asyncio.wait_for(self.pushes.get(), timeout)
            if isinstance(frame, BalanceChanged):
                return frame

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 2)


def pos_token(merchant: str, store: str = "s1", terminal: str = "t1", ttl: float = 3600) -> str:
    return auth.mint_pos(SECRET, merchant, store, terminal, ttl)


def app_token(merchant: str, member: str, ttl: float = 3600) -> str:
    return auth.mint_app(SECRET, merchant, member, ttl)
