"""Faults of a real Redis Cluster under load: a master killed and its replica promoted, a slot
resharded to another master. Sessions converge on the ledger's balances (PostgreSQL is the
authority: no acknowledged operation is lost), each push in order, and nothing is silently
stale (a session gets every change, or an explicit resync)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import pytest

from gateway.store.keys import Keys
from protocol.messages import BalanceChanged, Result, Resync
from tests.cluster.conftest import cluster_settings
from tests.conftest import TIME_FACTOR
from tests.live_support import pos, sale
from tests.support import running_node

pytestmark = [pytest.mark.slow, pytest.mark.world(members=6)]


async def _load(till: Any, members: list[str], stop: asyncio.Event) -> dict[str, list[int]]:
    """Sales for each member, one after another per member, until ``stop``: the versions of
    the acknowledged ones (a refused one is retried later with a new op id: not applied)."""
    acked: dict[str, list[int]] = {m: [] for m in members}

    async def one(m: str) -> None:
        while not stop.is_set():
            try:
                r = await sale(till, m, 100)
            except TimeoutError:
                r = None  # not acknowledged (it may still be applied: never counted)
            if isinstance(r, Result):
                acked[m].append(r.data.balance.version)
            else:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one(m) for m in members))
    return acked


async def _watch(client: Any, seen: dict[str, int], log: list[Any]) -> None:
    while True:
        frame = await client.pushes.get()
        if isinstance(frame, BalanceChanged):
            assert frame.version == seen[frame.member] + 1, (frame, seen[frame.member])
            seen[frame.member] = frame.version
        elif isinstance(frame, Resync):
            seen[frame.member] = frame.balance.version
        log.append(frame)


async def _ledger(pg_dsn: str, members: list[str]) -> dict[str, int]:
    db = await asyncpg.connect(pg_dsn)
    try:
        rows = await db.fetch(
            "SELECT member_id, version FROM accounts WHERE member_id = ANY($1)", members
        )
    finally:
        await db.close()
    return {r["member_id"]: r["version"] for r in rows}


async def _run_fault(
    http, pg_dsn, redis_prefix, cluster, world, fault, check=None
) -> dict[str, Any]:
    members = world["members"]
    async with (
        running_node(cluster_settings(pg_dsn, cluster, "fa"), redis_prefix) as na,
        running_node(cluster_settings(pg_dsn, cluster, "fb"), redis_prefix) as nb,
    ):
        watcher = await pos(http, nb.url, world["merchant"], "t-watch")
        seen: dict[str, int] = {}
        for m in members:
            r = await watcher.request({"type": "subscribe", "member": m})
            seen[m] = r.data.balance.version
        log: list[Any] = []
        reader = asyncio.create_task(_watch(watcher, seen, log))
        till = await pos(http, na.url, world["merchant"])
        stop = asyncio.Event()
        load = asyncio.create_task(_load(till, members, stop))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(fault)
        await asyncio.sleep(1.0)
        stop.set()
        acked = await load
        truth = await _ledger(pg_dsn, members)
        # No acknowledged operation lost: each is in PostgreSQL.
        for m in members:
            assert acked[m], m
            assert max(acked[m]) <= truth[m]
        # The watcher on the other node converges on the ledger, in order (checked as read).
        deadline = time.monotonic() + 20 * TIME_FACTOR
        while any(seen[m] < truth[m] for m in members) and time.monotonic() < deadline:
            assert not reader.done(), reader.exception()
            await asyncio.sleep(0.05)
        assert {m: seen[m] for m in members} == truth
        if check is not None:
            deadline = time.monotonic() + 10 * TIME_FACTOR
            while not await asyncio.to_thread(check):
                assert time.monotonic() < deadline, f"the check did not hold: {check}"
                await asyncio.sleep(0.1)
        # Cached reads on both nodes are the ledger's (nothing silently stale).
        for node in (na, nb):
            for m in members:
                assert (await node.node.reads.balance(m)).version == truth[m], m
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        for c in (watcher, till):
            await c.close()
        return {"acked": sum(len(v) for v in acked.values()), "frames": len(log)}


async def test_master_killed_under_load_replica_promoted(
    http, pg_dsn, redis_prefix, redis_cluster, world
):
    keys = Keys(redis_prefix, cluster=True)
    victim = redis_cluster.master_of(keys.slot(world["members"][0]))

    def fault() -> None:
        redis_cluster.kill(victim)
        redis_cluster.wait_failover(victim)

    try:
        out = await _run_fault(http, pg_dsn, redis_prefix, redis_cluster, world, fault)
        assert victim not in redis_cluster.masters()
        assert out["acked"] > 0
    finally:
        redis_cluster.restart(victim)  # back as a replica: the next test has a whole cluster


async def test_slot_resharded_under_load_subscriptions_follow(
    http, pg_dsn, redis_prefix, redis_cluster, world
):
    keys = Keys(redis_prefix, cluster=True)
    member = world["members"][1]
    slot = keys.slot(member)

    source = redis_cluster.master_of(slot)
    target = next(p for p in redis_cluster.masters() if p != source)

    def fault() -> None:
        redis_cluster.migrate_slot(slot, source, target)
        assert redis_cluster.master_of(slot) == target

    channel = keys.member_channel(member)

    class Followed:
        def __call__(self) -> bool:
            return (
                _shard_subscribers(redis_cluster, target, channel) == 1
                and _shard_subscribers(redis_cluster, source, channel) == 0
            )

        def __repr__(self) -> str:
            return f"source {source}: {_shard_subscribers(redis_cluster, source, channel)}, " + (
                f"target {target}: {_shard_subscribers(redis_cluster, target, channel)}"
            )

    await _run_fault(
        http,
        pg_dsn,
        redis_prefix,
        redis_cluster,
        world,
        fault,
        # The subscription followed the slot: the watching node's SSUBSCRIBE is on the new
        # owner (the other node watches nobody).
        check=Followed(),
    )


def _shard_subscribers(cluster: Any, port: int, channel: str) -> int:
    out = cluster.cli("pubsub", "shardnumsub", channel, port=port).split()
    return int(out[1]) if len(out) == 2 else 0


@pytest.mark.world(members=1)
async def test_broadcast_follows_when_its_master_is_killed(
    http, pg_dsn, redis_prefix, redis_cluster, world
):
    """Broadcasts ride classic pub/sub, whose connection is pinned to the master of the
    pattern's slot: killed, each node subscribes again through the refreshed slot map."""
    from redis.crc import key_slot

    from protocol.messages import Notice

    keys = Keys(redis_prefix, cluster=True)
    victim = redis_cluster.master_of(key_slot(keys.broadcast_channel("*").encode()))
    try:
        async with (
            running_node(cluster_settings(pg_dsn, redis_cluster, "ba"), redis_prefix) as na,
            running_node(cluster_settings(pg_dsn, redis_cluster, "bb"), redis_prefix) as nb,
        ):
            tills = [await pos(http, n.url, world["merchant"]) for n in (na, nb)]
            await asyncio.to_thread(redis_cluster.kill, victim)
            await asyncio.to_thread(redis_cluster.wait_failover, victim)
            deadline = time.monotonic() + 20 * TIME_FACTOR
            got: list[set[str]] = [set(), set()]
            sent: set[str] = set()
            # Until a broadcast published after the failover reached both nodes' sessions.
            while not (sent & got[0] & got[1]):
                assert time.monotonic() < deadline, (sent, got)
                async with http.post(
                    f"{na.url}/admin/broadcast",
                    json={"merchant": world["merchant"], "kind": "offer", "payload": {}},
                    headers={"Authorization": "Bearer dev-admin-token"},
                ) as resp:
                    if resp.status == 200:
                        sent.add((await resp.json())["notice"])
                await asyncio.sleep(0.3)
                for i, t in enumerate(tills):
                    while not t.pushes.empty():
                        f = t.pushes.get_nowait()
                        if isinstance(f, Notice):
                            got[i].add(f.notice)
            for t in tills:
                await t.close()
    finally:
        redis_cluster.restart(victim)


@pytest.mark.world(members=8)
async def test_a_shard_that_lost_its_data_is_detected_by_its_slots_epochs(
    http, pg_dsn, redis_prefix, redis_cluster, world
):
    """One shard loses its data (FLUSHALL on its master; its replica follows): the epochs of
    its slots are created anew, so a write composed before the loss (under the old epoch)
    only raises floors there, and the node learns each slot's new epoch from the reply. The
    other shards' epochs are untouched. Reads serve the ledger's balances throughout."""
    from redis.asyncio.cluster import RedisCluster

    keys = Keys(redis_prefix, cluster=True)
    members = world["members"]
    lost = redis_cluster.master_of(keys.slot(members[0]))
    on_lost = [m for m in members if redis_cluster.master_of(keys.slot(m)) == lost]
    elsewhere = [m for m in members if m not in on_lost]
    assert elsewhere, "the test members should live on different shards"
    async with running_node(cluster_settings(pg_dsn, redis_cluster, "ea"), redis_prefix) as na:
        till = await pos(http, na.url, world["merchant"])
        for m in members:
            assert isinstance(await sale(till, m), Result)
            assert isinstance(await sale(till, m), Result)  # the second under a known epoch
        epoch = na.node.epoch
        before = {m: epoch.at(epoch.token(), keys.slot(m)) for m in members}
        assert all(before.values())
        await asyncio.to_thread(redis_cluster.cli, "flushall", port=lost)
        token = epoch.token()  # taken before the loss was learned: stale for the lost slots
        client = RedisCluster.from_url(redis_cluster.url)
        try:
            for m in on_lost:
                assert await client.hgetall(keys.balance(m)) == {}
            for m in members:
                assert isinstance(await sale(till, m), Result)
            truth = await _ledger(pg_dsn, members)
            for m in on_lost:
                slot = keys.slot(m)
                assert epoch.at(epoch.token(), slot) not in ("", before[m])  # learned anew
                assert epoch.at(token, slot) == ""  # a write composed before: floors only
                assert (await na.node.reads.balance(m)).version == truth[m]
            for m in elsewhere:
                assert epoch.at(epoch.token(), keys.slot(m)) == before[m]
                v = await client.hget(keys.balance(m), "v")
                assert int(v) == truth[m]
        finally:
            await client.aclose()
        await till.close()
