"""The collector policy (``gateway/collector.py``) rests on one fact: a closed session is freed
by reference counting, not by the cyclic collector. These tests check that fact and the
policy's own mechanics, plus the pause metric."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from gateway.collector import CollectorPolicy
from gateway.metrics import Metrics
from tests.conftest import REDIS_URL
from tests.live_support import app, pos
from tests.support import running_node, settings_for

OURS = ("gateway", "protocol", "aiohttp", "msgspec", "redis", "asyncpg")


async def test_closed_sessions_leave_no_cyclic_garbage(http, pg_dsn, redis_prefix, world):
    settings = settings_for(pg_dsn, REDIS_URL, "n1")
    async with running_node(settings, redis_prefix) as node:
        warm = await pos(http, node.url, world["merchant"])
        await warm.close()
        await asyncio.sleep(0.2)
        gc.collect()
        gc.disable()
        try:
            clients = []
            for i in range(100):
                c = await pos(http, node.url, world["merchant"], f"t{i}")
                await c.request({"type": "subscribe", "member": world["members"][i % 3]})
                clients.append(c)
                clients.append(
                    await app(http, node.url, world["merchant"], world["members"][i % 3])
                )
            for c in clients:
                await c.close()
            del clients, c
            await asyncio.sleep(0.5)
            assert not node.node.sessions
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            kinds = Counter(
                f"{type(o).__module__}.{type(o).__qualname__}"
                for o in gc.garbage
                if type(o).__module__.split(".")[0] in OURS
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    # 200 sessions were opened and closed: none of their objects needed the collector
    assert sum(kinds.values()) < 20, kinds.most_common(10)


async def test_policy_freezes_survivors():
    policy = CollectorPolicy(interval=0.05)
    policy.start()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        keep = [[i] for i in range(5000)]  # survivors, tracked by the collector
        await asyncio.sleep(0.2)
        assert policy.freezes >= 2
        assert gc.get_freeze_count() >= frozen + len(keep)
    finally:
        await policy.close()
        gc.unfreeze()


async def test_the_periodic_freeze_collects_only_the_young_generations():
    """A full collection before each freeze walked everything allocated since the last one:
    58-104 ms stop-the-world pauses per node under push load (BENCHMARKS.md)."""
    seen: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    policy = CollectorPolicy(interval=3600)
    gc.callbacks.append(on_gc)
    try:
        policy.freeze()
    finally:
        gc.callbacks.remove(on_gc)
        gc.unfreeze()
    assert seen == [1]


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_periodic_full_collection_reclaims_cycles_that_formed_while_frozen():
    policy = CollectorPolicy(interval=0.05, full_every=0.3)
    policy.start()
    try:
        cycles = [Cycle() for _ in range(1000)]
        await asyncio.sleep(0.12)  # frozen by now
        assert gc.get_freeze_count() >= 1000
        alive = len([o for o in gc.get_objects() if type(o) is Cycle])  # unfrozen only
        assert alive == 0, "the cycles should be frozen, out of the collector's reach"
        del cycles  # now cyclic garbage among frozen objects: no freeze pass reclaims it
        for _ in range(100):
            await asyncio.sleep(0.05)
            if policy.full_collections:
                break
        assert policy.full_collections >= 1
        assert policy.reclaimed >= 1000
    finally:
        await policy.close()
        gc.unfreeze()
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Cycle]


async def test_policy_off_leaves_the_interpreter_alone():
    frozen = gc.get_freeze_count()
    policy = CollectorPolicy(interval=0)
    policy.start()
    assert policy.freezes == 0 and gc.get_freeze_count() == frozen
    await policy.close()


def test_collector_pauses_are_measured():
    m = Metrics()
    m.watch_gc()
    try:
        gc.collect()
    finally:
        m.unwatch_gc()
    text = m.render().decode()
    assert 'gateway_gc_pause_seconds_count{generation="2"} 1.0' in text
