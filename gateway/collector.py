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

Off by default for now (``GATEWAY_GC_FREEZE_SECONDS=0``): with it on at 10 s, the fault test
``test_redis_restarted_empty_under_load`` failed in 2 of 7 fresh-clone CI runs (a node kept
answering a balance a few versions behind the ledger for more than 10 s after a Redis restart;
every answer was a real past state). Whether the policy causes that or only changes its timing
is not known yet; the benchmarks ran with it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc


class CollectorPolicy:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.freezes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval <= 0:
            return
        self.freeze()
        self._task = asyncio.create_task(self._run(), name="gc-freeze")

    def freeze(self) -> None:
        gc.collect()
        gc.freeze()
        self.freezes += 1

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.freeze()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
