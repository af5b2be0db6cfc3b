"""Two nodes on a real Redis Cluster (GATEWAY_REDIS_CLUSTER=1): a change made through one
reaches the other's sessions in order over sharded pub/sub, with members on different
shards; broadcast and presence work across shards; every script's keys are in one slot."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gateway.store.keys import Keys
from protocol.messages import Notice, Presence, Result
from tests.cluster.conftest import cluster_settings
from tests.live_support import app, changes_until, next_of, pos, sale
from tests.support import running_node


@pytest.mark.world(members=8)
async def test_cross_node_push_in_order_over_sharded_pubsub(
    http, pg_dsn, redis_prefix, redis_cluster, world
):
    members = world["members"]
    keys = Keys(redis_prefix, cluster=True)
    masters = {redis_cluster.master_of(keys.slot(m)) for m in members}
    assert len(masters) >= 2, "the test members should live on different shards"
    async with (
        running_node(cluster_settings(pg_dsn, redis_cluster, "ca"), redis_prefix) as na,
        running_node(cluster_settings(pg_dsn, redis_cluster, "cb"), redis_prefix) as nb,
    ):
        watcher = await pos(http, nb.url, world["merchant"], "t-watch")
        starts = {}
        for m in members:
            r = await watcher.request({"type": "subscribe", "member": m})
            assert isinstance(r, Result)
            starts[m] = r.data.balance.version
        # The member channels are shard channels, on the master that owns each slot; each
        # gateway node holds at most one sharded-pub/sub connection per shard on a master.
        for m in members:
            port = redis_cluster.master_of(keys.slot(m))
            shard = redis_cluster.cli("pubsub", "shardchannels", port=port).split()
            assert keys.member_channel(m) in shard
        shards = nb.node.settings.store.redis_shards
        for port in {redis_cluster.master_of(keys.slot(m)) for m in members}:
            clients = redis_cluster.cli("client", "list", port=port).splitlines()
            sharded = [c for c in clients if " ssub=" in c and " ssub=0 " not in c]
            assert 0 < len(sharded) <= shards, sharded
        till = await pos(http, na.url, world["merchant"])
        receipts = await asyncio.gather(
            *(sale(till, m, 100 * (i + 1)) for i in range(10) for m in members)
        )
        assert all(isinstance(r, Result) for r in receipts)
        got = await changes_until_all(watcher, {m: starts[m] + 10 for m in members})
        for m in members:
            assert [c.version for c in got[m]] == list(range(starts[m] + 1, starts[m] + 11))
        # The cache went through the per-slot epochs: each balance is cached at the final
        # version, or (a batch committed before its slot's epoch was known) its floor is, so
        # no reader serves an older one; a read then fills it under the slot's epoch.
        client = RedisCluster.from_url(redis_cluster.url)
        try:
            for m in members:
                final = starts[m] + 10
                v, f = await client.hmget(keys.balance(m), ["v", "f"])
                assert max(int(v or -1), int(f or -1)) == final
                assert key_slot(keys.epoch(keys.slot(m)).encode()) == keys.slot(m)
                assert await client.exists(keys.epoch(keys.slot(m)))
                assert (await na.node.reads.balance(m)).version == final
                assert int(await client.hget(keys.balance(m), "v")) == final
        finally:
            await client.aclose()
        await watcher.close()
        await till.close()


async def changes_until_all(client, want: dict[str, int]) -> dict[str, list]:
    from protocol.messages import BalanceChanged

    got: dict[str, list] = {m: [] for m in want}
    while any(not got[m] or got[m][-1].version < v for m, v in want.items()):
        c = await next_of(client, BalanceChanged, 10)
        got[c.member].append(c)
    return got


async def test_broadcast_and_presence_across_shards(
    http, pg_dsn, redis_prefix, redis_cluster, world
):
    member = world["members"][1]
    async with (
        running_node(cluster_settings(pg_dsn, redis_cluster, "pa"), redis_prefix) as na,
        running_node(cluster_settings(pg_dsn, redis_cluster, "pb"), redis_prefix) as nb,
    ):
        till = await pos(http, na.url, world["merchant"])
        r = await till.request({"type": "subscribe", "member": member, "presence": True})
        assert isinstance(r, Result) and r.data.presence == []
        phone = await app(http, nb.url, world["merchant"], member)
        p = await next_of(till, Presence)
        assert [x.node for x in p.online] == ["pb"]
        async with http.post(
            f"{nb.url}/admin/broadcast",
            json={"merchant": world["merchant"], "kind": "offer", "payload": {"x": 1}},
            headers={"Authorization": "Bearer dev-admin-token"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        for c in (till, phone):
            n = await next_of(c, Notice)
            assert n.payload == {"x": 1}
        await phone.close()
        p = await next_of(till, Presence)
        assert p.online == []
        # a change through node B reaches node A's POS
        till_b = await pos(http, nb.url, world["merchant"])
        done = await sale(till_b, member)
        assert isinstance(done, Result)
        got = await changes_until(till, done.data.balance.version)
        assert got[-1].version == done.data.balance.version
        for c in (till, till_b):
            await c.close()


@pytest.mark.world(members=8)
async def test_rebuild_fills_every_shard(http, pg_dsn, redis_prefix, redis_cluster, world):
    """``rebuild-cache`` on a cluster: one call per slot, under each slot's epoch."""
    from gateway.ledger import rebuild_cache
    from gateway.store.redis import create_client

    keys = Keys(redis_prefix, cluster=True)
    members = world["members"]
    client = create_client(redis_cluster.url, cluster=True)
    try:
        n, _ = await rebuild_cache(pg_dsn, client, keys)
        assert n >= len(members)
        for m in members:
            assert int(await client.hget(keys.balance(m), "v")) >= 0
        assert len({redis_cluster.master_of(keys.slot(m)) for m in members}) >= 2
    finally:
        await client.aclose()
