"""How this process uses Python's cyclic garbage collector.

A node holding 17,000 sessions keeps millions of long-lived objects. With the interpreter's
default policy every full collection walks all of them: measured in the broadcast benchmark,
18 full collections per node averaging 1.77 s each, during which the event loop stood still
(no command answered, no push written). Almost none of that work finds garbage: a closed
session is freed by reference counting (measured under uvloop: 300 sessions opened,
subscribed and closed left about 40 unreachable objects in all, a constant, not per session).

So the node, every ``interval`` seconds, collects what is young and then moves every surviving
object to the permanent generation (``gc.freeze()``), which later collections never walk: a
collection only ever walks what was allocated since the last freeze. Every 10 s rather than
every 60 s: while 51,000 sockets opened over three nodes, full collections averaged 247 ms
instead of 690 ms (wall time), and a broadcast's last receipt came 1.58 s after it was sent
instead of 2.32 s (one benchmark run each, BENCHMARKS.md). The generation thresholds
stay the interpreter's: raising the young one to 20,000 was tried and made each young
collection pause ~88 ms (wall, on the shared 2-core box) instead of ~2 ms, for the same total.
Cyclic garbage that forms among frozen objects later is not reclaimed; the measurement above is
why that is a few bytes, not a leak per session. ``gateway_gc_pause_seconds`` shows the pauses.

"What is young" is generations 0 and 1 (``gc.collect(1)``). The freeze used to run a full
``gc.collect()``, which walks everything allocated since the last freeze that survived, the
oldest generation included. Under the push benchmark's load that walk took 58 to 104 ms of
wall time per node and freeze: two such pauses per node in every 12-second quick run, while
pushes waited. With the young collection the same runs showed no generation-2 pause at all,
and generation-1 pauses of 2 to 8 ms mean (BENCHMARKS.md, 2026-11-24). Garbage cycles that
reached generation 2 before a freeze are frozen with the rest until the next full collection
below.

What freezing gives up is bounded: every ``full_every`` seconds (default 600) the node
unfreezes everything, runs one full collection and freezes again, so cyclic garbage that
formed among (or was frozen with) frozen objects lives at most that long;
``gateway_gc_reclaimed_objects_total`` counts what those collections found, i.e. what the freeze had kept from the collector. That
collection walks every object once: a pause of the size measured before the policy, once per
``full_every`` instead of whenever the interpreter's thresholds said.

It was off by default for a while: with it on, ``test_redis_restarted_empty_under_load``
failed in 2 of 7 fresh-clone CI runs. The cause was in the cache, not here (late writes could
move a cached balance back after a Redis restart; fixed with the cache epoch and floors, see
``gateway/store/keys.py``); the policy's pauses only widened the window.
"""

from __future__ import annotations

import asyncio
import gc

from gateway.background import stop


class CollectorPolicy:
    def __init__(self, interval: float, full_every: float = 600.0) -> None:
        self.interval = interval
        self.full_every = full_every
        self.freezes = 0
        self.full_collections = 0
        #: Objects found unreachable by the periodic full collections, in all.
        self.reclaimed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval <= 0:
            return
        self.freeze()
        self._task = asyncio.create_task(self._run(), name="gc-freeze")

    def freeze(self) -> None:
        gc.collect(1)  # the young generations only: never a walk of everything unfrozen
        gc.freeze()
        self.freezes += 1

    def full_collection(self) -> int:
        """Unfreeze, collect everything, freeze again; returns the objects reclaimed."""
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.full_collections += 1
        self.reclaimed += found
        return found

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.full_every
        while True:
            await asyncio.sleep(self.interval)
            if self.full_every > 0 and loop.time() >= next_full:
                self.full_collection()
                next_full = loop.time() + self.full_every
            else:
                self.freeze()

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
