"""The gateway's Redis clients pack commands with hiredis: the same bytes as redis-py's own
packer, the same error for an argument Redis cannot take, and real round trips still work."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from gateway.store.redis import create_client
from tests.conftest import REDIS_URL

COMMANDS = [
    ("SET", "k", "v"),
    ("SET", "ключ", "значение🙂"),
    ("SET", b"k", memoryview(b"\x00\xff")),
    ("SET", "", ""),
    ("ZADD", "z", 0.1, "m", 1e20, "n", -3.5, "o"),
    ("INCRBY", "n", -12),
    ("SET", "big", 2**70),
    ("SCRIPT LOAD", "return 1"),
    ("CLIENT SETINFO", "LIB-NAME", "x"),
    ("EVALSHA", "a" * 40, 2, "lg:bal:{m:b1}", "lg:ch:{m:b1}", "", 7, 100, 0, b'{"a":1}' * 900),
]


def _packed(conn: aioredis.Connection, *args: object) -> bytes:
    return b"".join(bytes(part) for part in conn.pack_command(*args))


def test_bytes_are_redis_pys() -> None:
    client = create_client(REDIS_URL)
    ours = client.connection_pool.connection_class(**client.connection_pool.connection_kwargs)
    theirs = aioredis.Connection()
    assert type(ours) is not aioredis.Connection  # the packing class is in use
    for args in COMMANDS:
        assert _packed(ours, *args) == _packed(theirs, *args), args


@pytest.mark.parametrize("bad", [None, True, object()])
def test_unencodable_argument_is_redis_pys_error(bad: object) -> None:
    client = create_client(REDIS_URL)
    conn = client.connection_pool.connection_class(**client.connection_pool.connection_kwargs)
    with pytest.raises(DataError):
        conn.pack_command("SET", "k", bad)


async def test_round_trips(redis_prefix: str) -> None:
    client = create_client(REDIS_URL)
    key = f"{redis_prefix}:packing"
    try:
        assert await client.set(key, "значение🙂")
        assert (await client.get(key)).decode() == "значение🙂"
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await script(keys=[key], args=[42, b"\x00\xff"]) == [
            key.encode(),
            b"42",
            b"\x00\xff",
        ]
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(key + "h", mapping={"p": 1, "h": 2.5})
            pipe.hgetall(key + "h")
            _, fields = await pipe.execute()
        assert fields == {b"p": b"1", b"h": b"2.5"}
    finally:
        await client.delete(key, key + "h")
        await client.aclose()


async def test_a_redis_that_could_bring_back_older_balances_is_reported() -> None:
    """The cache's epoch sees a Redis that lost everything, not one that evicts single keys or
    restores a snapshot: the node warns at start when the configuration allows either."""
    from gateway.store.redis import cache_risks, create_client
    from tests.servers import PrivateRedis

    server = PrivateRedis()
    server.start()
    client = create_client(server.url)
    try:
        assert await cache_risks(client) == []  # no persistence, noeviction
        await client.config_set("maxmemory-policy", "allkeys-lru")
        await client.config_set("appendonly", "yes")
        risks = await cache_risks(client)
        assert len(risks) == 2 and "allkeys-lru" in risks[0] and "persistence" in risks[1]
    finally:
        await client.aclose()
        server.stop()
