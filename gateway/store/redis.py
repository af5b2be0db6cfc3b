"""redis.asyncio adapter: client creation and error translation at the boundary."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ClusterError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import StoreUnavailable

#: A single Redis or a Redis Cluster (``GATEWAY_REDIS_CLUSTER``): the same commands, and on a
#: cluster every script's keys in one slot (``Keys.single_slot``).
Redis = aioredis.Redis | RedisCluster

#: Redis unreachable, or answering but refusing the command: out of memory under
#: ``noeviction``, a read-only replica after a failover, writes stopped after a failed
#: snapshot (all ``ResponseError``). Either way callers fall back as for an outage.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisResponseError,
    ClusterError,
    RedisClusterException,
    ConnectionError,
    OSError,
    TimeoutError,
)


class Breaker:
    """Stops calling Redis for a while after a failure, so an outage costs one timeout, not
    one per request. Callers fall back (PostgreSQL reads, outbox relay) while it is open."""

    __slots__ = ("cooldown", "open_until")

    def __init__(self, cooldown: float = 1.0) -> None:
        self.cooldown = cooldown
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self) -> None:
        self.open_until = time.monotonic() + self.cooldown

    def reset(self) -> None:
        self.open_until = 0.0


class CacheEpoch:
    """What this node knows of the cache's epoch (``keys.CACHE_EPOCH``): "" until it is
    learned from the reply of a script that writes balances. Shared by the node's writers.

    On a cluster there is one epoch per hash slot (``per_slot``): a shard that lost its data
    (restarted empty) starts new epochs for its slots only. A writer then takes a ``token``
    before it reads or commits, and asks ``at(token, slot)`` for the epoch of its slot as it
    was known then: the slot's epoch if it has not changed since the token, else "" (only
    floors are raised, as for an unknown epoch). A token is a generation number, so taking
    one costs nothing whatever the number of slots."""

    __slots__ = ("_changed", "_generation", "_slots", "per_slot", "value")

    def __init__(self, per_slot: bool = False) -> None:
        self.value = ""
        self.per_slot = per_slot
        self._slots: dict[int, str] = {}
        self._changed: dict[int, int] = {}
        self._generation = 0

    def learn(self, reply: bytes | str, slot: int = -1) -> str:
        value = reply.decode() if isinstance(reply, bytes) else reply
        if slot < 0 or not self.per_slot:
            self.value = value
        elif self._slots.get(slot) != value:
            self._generation += 1
            self._slots[slot] = value
            self._changed[slot] = self._generation
        return value

    def token(self) -> str:
        """What a writer keeps from before its read or commit (the epoch, or a generation)."""
        return f"#{self._generation}" if self.per_slot else self.value

    def at(self, token: str, slot: int) -> str:
        """The epoch of ``slot`` as known when ``token`` was taken ("" if unknown then)."""
        if not self.per_slot or slot < 0:
            return token
        if not token.startswith("#"):
            return ""
        known = self._slots.get(slot)
        if known is None or self._changed[slot] > int(token[1:]):
            return ""
        return known


class _HiredisPacking(AbstractConnection):
    """Packs each command with hiredis's C encoder. redis-py's asyncio connections pack in
    Python, one type check and one bytes join per argument: a publish of 13 changes (83
    arguments) took 71 us to pack there and 10 us here; one change, 9.4 against 1.4 us
    (2026-11-24). The bytes are the same (``tests/store/test_redis_packing.py``)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " in name:  # "SCRIPT LOAD" goes as two arguments
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)  # raises redis-py's own DataError


class _Connection(_HiredisPacking, aioredis.Connection):
    pass


class _SSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


class _UnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    pass


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    aioredis.Connection: _Connection,
    aioredis.SSLConnection: _SSLConnection,
    aioredis.UnixDomainSocketConnection: _UnixConnection,
}


def create_client(url: str, timeout: float = 2.0, cluster: bool = False) -> Redis:
    """A client of the Redis at ``url``, or with ``cluster`` of the Redis Cluster that ``url``
    is one node of (redis-py's ``RedisCluster``: it learns the slot map, follows MOVED/ASK and
    refreshes the map after a failover or a resharding)."""
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            max_connections=64,
            connection_class=_Connection,
        )
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=64,
    )
    pool = client.connection_pool
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return client


_repairs: set[asyncio.Task[None]] = set()


def repair_topology(redis: Redis) -> None:
    """After a failed call on a cluster: refresh the slot map in a task of its own. redis-py
    refreshes it inside a failing command, between retries; a caller that bounds its call
    (the publisher's 0.5 s) cancels that refresh with it, and after a failover every publish
    then went on failing against the dead master (``tests/cluster``). One at a time; a no-op
    on a single Redis, and while redis-py's minimum interval between refreshes runs."""
    if not isinstance(redis, RedisCluster) or _repairs:
        return
    redis._request_refresh()
    if not redis.nodes_manager._refresh_due(redis.retry):
        return

    async def run() -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await redis.initialize()

    task = asyncio.get_running_loop().create_task(run())
    _repairs.add(task)
    task.add_done_callback(_repairs.discard)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"Redis unavailable during {what}: {type(exc).__name__}") from exc


async def cache_risks(redis: Redis) -> list[str]:
    """What in this Redis's configuration the cache's guards cannot see (see the README's
    "How the ledger stays correct"): evicting single keys, or bringing back older data after a
    restart. Empty when nothing is wrong, or when Redis does not allow CONFIG (managed)."""
    try:
        config = await redis.config_get("maxmemory-policy", "save", "appendonly")
    except REDIS_ERRORS:
        return []
    policy = config.get("maxmemory-policy", "")
    save = config.get("save", "")
    aof = config.get("appendonly", "no")
    risks = []
    if str(policy).startswith("allkeys"):
        risks.append(
            f"maxmemory-policy {policy} may evict a single balance key, and a late write could "
            "then store an older balance: use noeviction"
        )
    if save or aof == "yes":
        risks.append(
            "persistence is on (save/appendonly): a restart restores older balances under the "
            "same epoch; run the cache without it, or FLUSHDB the key space after a restart"
        )
    return risks
