"""Real gateway processes (``python -m gateway serve``) sharing PostgreSQL and Redis: changes
made through one node reach sessions on the others in order; a node killed with SIGKILL loses
no change for clients that resume elsewhere; SIGTERM drains."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from protocol.codes import CloseCode
from protocol.messages import BalanceChanged, Error, Result
from tests.conftest import REDIS_URL, TIME_FACTOR, unique
from tests.live_support import app, changes_until, pos, sale
from tests.support import NodeProcess, WsClient

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def nodes(
    pg_dsn: str, prefix: str, names: list[str], env: dict[str, str] | None = None
) -> AsyncIterator[list[NodeProcess]]:
    procs = [NodeProcess(pg_dsn, REDIS_URL, prefix, n, env) for n in names]
    try:
        await asyncio.gather(*(p.wait_ready(30 * TIME_FACTOR) for p in procs))
        yield procs
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.kill()


async def test_changes_through_one_node_reach_the_others_in_order(
    http, pg_dsn, redis_prefix, world
):
    member = world["members"][0]
    async with nodes(pg_dsn, redis_prefix, ["ma", "mb", "mc"]) as (a, b, c):
        phone = await app(http, b.url, world["merchant"], member)
        watcher = await pos(http, c.url, world["merchant"], "t-watch")
        start = (await phone.request({"type": "subscribe", "member": member})).data.balance
        await watcher.request({"type": "subscribe", "member": member})
        till = await pos(http, a.url, world["merchant"])
        receipts = await asyncio.gather(*(sale(till, member, 100 * (i + 1)) for i in range(20)))
        assert all(isinstance(r, Result) for r in receipts)
        final = max(r.data.balance.version for r in receipts)
        assert final == start.version + 20
        for client in (phone, watcher):
            got = await changes_until(client, final)
            assert [g.version for g in got] == list(range(start.version + 1, final + 1))
            assert got[-1].posted == max(r.data.balance.posted for r in receipts)
        for client in (phone, watcher, till):
            await client.close()


async def test_killed_node_clients_resume_elsewhere_without_a_gap(
    http, pg_dsn, redis_prefix, world
):
    member = world["members"][1]
    async with nodes(pg_dsn, redis_prefix, ["ka", "kb"]) as (a, b):
        phone = await app(http, b.url, world["merchant"], member)
        sub = await phone.request({"type": "subscribe", "member": member})
        seen: list[int] = [sub.data.balance.version]
        till = await pos(http, a.url, world["merchant"])
        stop = asyncio.Event()
        versions: list[int] = []

        async def sell() -> None:
            while not stop.is_set():
                r = await sale(till, member)
                versions.append(r.data.balance.version)
                await asyncio.sleep(0.01)

        seller = asyncio.create_task(sell())
        while len(seen) < 5:
            seen.append((await phone.next_change()).version)
        b.kill()  # SIGKILL: no close frame, no drain
        code = await phone.wait_closed()
        assert code != CloseCode.DRAINING
        # drain what arrived before the kill, then resume on the surviving node with `since`
        while not phone.pushes.empty():
            f = phone.pushes.get_nowait()
            if isinstance(f, BalanceChanged):
                seen.append(f.version)
        again = await app(http, a.url, world["merchant"], member)
        r = await again.request({"type": "subscribe", "member": member, "since": seen[-1]})
        assert r.data.recovered is True
        seen.extend(m.version for m in r.data.missed)
        assert seen[-1] == r.data.balance.version
        await asyncio.sleep(0.2)
        stop.set()
        await seller
        final = versions[-1]
        if final > seen[-1]:
            seen.extend(c.version for c in await changes_until(again, final))
        assert seen == list(range(seen[0], final + 1)), "a change was lost or repeated"
        await again.close()
        await till.close()


async def test_sigterm_drains_readiness_fails_inflight_finish_clients_get_3000(
    http, pg_dsn, redis_prefix, world
):
    member = world["members"][2]
    drain = 3.0
    env = {"GATEWAY_DRAIN_SECONDS": str(drain)}
    async with nodes(pg_dsn, redis_prefix, ["da", "db"], env) as (a, b):
        phone = await app(http, a.url, world["merchant"], member)
        await phone.request({"type": "subscribe", "member": member})
        till = await pos(http, a.url, world["merchant"])
        ops = [unique("op") for _ in range(30)]
        pending = [
            asyncio.create_task(
                till.request({"type": "sale", "op": op, "member": member, "total": 500})
            )
            for op in ops
        ]
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        a.terminate()
        statuses: list[int] = []
        for _ in range(50):
            try:
                async with http.get(a.url + "/readyz") as resp:
                    statuses.append(resp.status)
                    if resp.status == 503:
                        break
            except aiohttp.ClientError:
                statuses.append(0)
                break
            await asyncio.sleep(0.01)
        assert 503 in statuses, statuses
        async with http.get(b.url + "/readyz") as resp:
            assert resp.status == 200  # the other node is unaffected
        # new sessions on the draining node are told to go elsewhere
        with contextlib.suppress(aiohttp.ClientError):
            late = await WsClient.connect(http, a.url)
            assert await late.wait_closed() == CloseCode.DRAINING
        replies = await asyncio.gather(*pending, return_exceptions=True)
        assert await till.wait_closed() == CloseCode.DRAINING
        assert await phone.wait_closed() == CloseCode.DRAINING
        rc = await asyncio.to_thread(a.wait, drain + 5 * TIME_FACTOR)
        elapsed = time.monotonic() - t0
        assert rc == 0, a.proc.returncode
        print(f"drain: exit {elapsed:.2f} s after SIGTERM (GATEWAY_DRAIN_SECONDS={drain})")
        # every command got an answer: done, or refused as `draining` (nothing applied)
        check = await pos(http, b.url, world["merchant"])
        for op, reply in zip(ops, replies, strict=True):
            assert isinstance(reply, Result | Error), reply
            out = await check.request({"type": "outcome", "op": op})
            if isinstance(reply, Result):
                assert isinstance(out, Result) and out.data.ok
            else:
                assert reply.code == "draining" and reply.retryable
                assert isinstance(out, Error) and out.code == "operation_not_found"
        assert any(isinstance(r, Result) for r in replies)
        await check.close()
