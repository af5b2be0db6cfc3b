"""redis.asyncio adapter: client creation and error translation at the boundary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import StoreUnavailable

Redis = aioredis.Redis

REDIS_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def create_client(url: str, timeout: float = 2.0) -> Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=64,
    )


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"Redis unavailable during {what}: {type(exc).__name__}") from exc
