"""The fan-out connection to Redis is lost (Redis restarted): when it comes back, every feed
compares its version with the ledger and delivers what it missed, without waiting for another
change. Uses a private redis-server on a spare port (never the shared one)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from protocol.messages import BalanceChanged, Result
from tests.conftest import TIME_FACTOR
from tests.gateway.live_support import app, eventually, make_world, next_of, pos, sale
from tests.servers import PrivateRedis
from tests.support import running_node, settings_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    yield r
    r.stop()


@pytest.fixture
async def world(pg_dsn: str) -> dict[str, Any]:
    return await make_world(pg_dsn, members=1)


async def test_feeds_fill_what_was_missed_while_fanout_was_down(http, pg_dsn, private_redis, world):
    private_redis.start()
    member = world["members"][0]
    settings = settings_for(pg_dsn, private_redis.url, "rr")
    # No outbox republish within the test: only the reconnect check can deliver the change.
    settings = replace(settings, ledger=replace(settings.ledger, relay_min_age=600.0))
    async with running_node(settings, "lgr") as node:
        phone = await app(http, node.url, world["merchant"], member)
        till = await pos(http, node.url, world["merchant"])
        v0 = (await phone.request({"type": "subscribe", "member": member})).data.balance.version
        first = await sale(till, member)
        assert (await next_of(phone, BalanceChanged)).version == first.data.balance.version
        feeds = node.node.feeds
        reconnects = feeds.reconnects
        private_redis.kill()  # the fan-out connection (and the cache) are gone
        missed = await sale(till, member)  # committed in PostgreSQL; its publish fails
        assert isinstance(missed, Result) and missed.data.balance.version == v0 + 2
        await asyncio.sleep(0.3 * TIME_FACTOR)
        private_redis.start()
        await eventually(lambda: feeds.reconnects > reconnects, 15, "fan-out reconnect")
        change = await next_of(phone, BalanceChanged, 10)
        assert change.version == v0 + 2 and change.posted == missed.data.balance.posted
        await phone.close()
        await till.close()


async def test_during_a_redis_outage_broadcasts_answer_503_and_the_backlog_is_counted(
    http, pg_dsn, private_redis, world
):
    """Found in review: a broadcast with Redis down was a bare 500, and the outbox backlog
    gauge (gateway_outbox_pending) read 0 throughout the outage, when the backlog grows."""
    private_redis.start()
    member = world["members"][0]
    settings = settings_for(pg_dsn, private_redis.url, "rb")
    async with running_node(settings, "lgb") as node:
        till = await pos(http, node.url, world["merchant"])
        private_redis.kill()
        for _ in range(3):
            assert isinstance(await sale(till, member), Result)  # acknowledged: in PostgreSQL
        async with http.post(
            f"{node.url}/admin/broadcast",
            json={"merchant": world["merchant"], "kind": "offer", "payload": {}},
            headers={"Authorization": "Bearer dev-admin-token"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 503 and body["retryable"] is True, body
        relay = node.node.relay
        await eventually(lambda: relay.pending >= 3, 10, "the backlog counted")
        private_redis.start()
        await eventually(lambda: relay.pending == 0, 15, "the backlog drained")
        await till.close()
