"""Node limits and liveness: sessions per node (3002), heartbeat reaping of silent peers (3003),
auth timeout (3504), and the idle cost of a session."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from protocol.codes import CloseCode
from protocol.messages import Result, Welcome
from tests.conftest import REDIS_URL
from tests.live_support import eventually, pos
from tests.support import WsClient, pos_token, running_node, settings_for

pytestmark = pytest.mark.world(members=1)


def closes(node: Any, code: int) -> float:
    return float(node.metrics.closes.labels(str(code))._value.get())


async def test_node_full_closes_3002(http, pg_dsn, redis_prefix, world):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_sessions=2)
    async with running_node(settings, redis_prefix) as node:
        a = await pos(http, node.url, world["merchant"])
        b = await pos(http, node.url, world["merchant"], "t2")
        c = await WsClient.connect(http, node.url)
        assert await c.wait_closed() == CloseCode.NODE_FULL
        await a.close()
        await eventually(lambda: len(node.node.sessions) == 1, what="a session slot freed")
        d = await pos(http, node.url, world["merchant"], "t3")
        assert isinstance(await d.request({"type": "ping"}), Result)
        await b.close()
        await d.close()


async def test_peer_that_stops_answering_pings_is_reaped(http, pg_dsn, redis_prefix, world):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", heartbeat=0.2)
    async with running_node(settings, redis_prefix) as node:
        alive = await pos(http, node.url, world["merchant"])
        ws = await http.ws_connect(node.url + "/ws", autoping=False)  # never answers pings
        dead = WsClient(ws)
        assert isinstance(await dead.hello(pos_token(world["merchant"], "s1", "t-dead")), Welcome)
        await eventually(lambda: len(node.node.sessions) == 1, 5, "the silent peer reaped")
        assert closes(node.node, CloseCode.HEARTBEAT_TIMEOUT) == 1
        # a peer that answers pings (every websocket library does) stays
        await asyncio.sleep(0.6)
        assert isinstance(await alive.request({"type": "ping"}), Result)
        await alive.close()
        await ws.close()


async def test_server_pings_and_answers_client_pings(http, pg_dsn, redis_prefix, world):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", heartbeat=0.2)
    async with running_node(settings, redis_prefix) as node:
        ws = await http.ws_connect(node.url + "/ws", autoping=False)
        token = pos_token(world["merchant"], "s1", "t-ping")
        await ws.send_json({"type": "hello", "id": "1", "versions": [1], "token": token})
        assert (await ws.receive_json(timeout=2))["type"] == "welcome"
        msg = await ws.receive(timeout=2)  # the node's heartbeat
        assert msg.type == aiohttp.WSMsgType.PING
        await ws.pong(msg.data)
        await ws.ping(b"are-you-there")
        msg = await ws.receive(timeout=2)
        while msg.type == aiohttp.WSMsgType.PING:  # a heartbeat may come first
            await ws.pong(msg.data)
            msg = await ws.receive(timeout=2)
        assert msg.type == aiohttp.WSMsgType.PONG and msg.data == b"are-you-there"
        assert node.node.heartbeat.reaped == 0
        await ws.close()


async def test_no_hello_in_time_closes_3504(http, pg_dsn, redis_prefix):
    settings = settings_for(pg_dsn, REDIS_URL, "n1", auth_timeout=0.2)
    async with running_node(settings, redis_prefix) as node:
        c = await WsClient.connect(http, node.url)
        assert await c.wait_closed() == CloseCode.AUTH_TIMEOUT


async def test_idle_session_holds_no_task_queue_or_timer_of_its_own(
    http, pg_dsn, redis_prefix, world
):
    async with running_node(settings_for(pg_dsn, REDIS_URL, "n1"), redis_prefix) as node:
        c = await pos(http, node.url, world["merchant"])
        await c.request({"type": "subscribe", "member": world["members"][0]})
        await asyncio.sleep(0.05)
        (s,) = node.node.sessions
        assert s.writer is None and s.queue is None and s.queued_bytes == 0
        assert not s.inflight
        assert not hasattr(s, "__dict__")
        await c.close()


async def test_sockets_that_never_say_hello_hold_only_their_share_of_the_node(
    http, pg_dsn, redis_prefix, world
):
    """Found in review: connections that had not sent ``hello`` counted like sessions, so a
    flood of idle sockets, each renewed within the auth timeout, could fill a node and turn
    every till away with 3002. They may now hold GATEWAY_MAX_PENDING_SESSIONS slots at most."""
    settings = settings_for(pg_dsn, REDIS_URL, "n1", max_sessions=10, max_pending=2)
    async with running_node(settings, redis_prefix) as node:
        idle = [await WsClient.connect(http, node.url) for _ in range(2)]
        await eventually(lambda: node.node.pending == 2, what="two pending sockets")
        third = await WsClient.connect(http, node.url)
        assert await third.wait_closed() == CloseCode.NODE_FULL
        await idle[0].close()
        await eventually(lambda: node.node.pending == 1, what="a pending slot freed")
        till = await pos(http, node.url, world["merchant"])
        assert isinstance(await till.request({"type": "ping"}), Result)
        assert node.node.pending == 1  # the till was welcomed: no longer pending
        await till.close()
        await idle[1].close()
        await eventually(lambda: node.node.pending == 0, what="nothing pending")
