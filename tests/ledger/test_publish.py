"""A batch's publish is one round trip to Redis, and still works when Redis has forgotten its
scripts (a restart, SCRIPT FLUSH). A private Redis server: the commands it counts are ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from gateway.fanout import Publisher
from gateway.ledger import Change, Entry
from gateway.ledger.balances import entry_change
from gateway.store.keys import Keys
from tests.servers import PrivateRedis


@pytest.fixture
async def private_redis() -> AsyncIterator[aioredis.Redis]:
    server = PrivateRedis()
    server.start()
    client = aioredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


def change(member: str, version: int) -> Change:
    return entry_change(Entry(
        "m", member, version, "earn", f"op{version}", "issuance", 5, 0, 5 * version, 0,
        "pos", "s1", "t1", datetime.now(UTC),
    ))  # fmt: skip


async def commands(r: aioredis.Redis) -> dict[str, int]:
    stats = await r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_publish_is_one_round_trip(private_redis: aioredis.Redis) -> None:
    keys = Keys("pub")
    publisher = Publisher(private_redis, keys)
    await publisher.publish([change("a", 1)], "")  # loads the script once
    before = await commands(private_redis)
    await publisher.publish([change("a", 2), change("b", 1)], "")
    after = await commands(private_redis)
    spent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    # Commands run inside the script count too (hget, hset, publish): the calls sent by the
    # client are the EVAL* and SCRIPT ones.
    sent = {k: n for k, n in spent.items() if k.startswith(("eval", "script"))}
    assert sent == {"evalsha": 1}, spent


async def test_a_publish_reloads_scripts_redis_forgot(private_redis: aioredis.Redis) -> None:
    keys = Keys("pub")
    publisher = Publisher(private_redis, keys)
    await private_redis.set(keys.epoch(), "e1")
    await publisher.publish([change("a", 1)], "e1")
    await private_redis.script_flush()
    async with private_redis.pubsub() as ps:
        await ps.subscribe(keys.member_channel("a"))
        await ps.get_message(timeout=1)  # the subscribe confirmation
        await publisher.publish([change("a", 2)], "e1")
        msg = await ps.get_message(timeout=2)
    assert msg is not None and b'"version":2' in msg["data"]
    assert await private_redis.hget(keys.balance("a"), "v") == b"2"
