"""How fast this machine is right now: a fixed pure-Python workload, timed.

On a shared virtual machine the same code runs tens of percent slower from one minute to the
next (the bench's pgbench baseline measured 6,696 tx/s in one full run and 4,476 tx/s
in the next, 2026-11-24). ``make bench`` times this probe before every stage and prints the
readings beside the figures, so a reader can tell a change in the code from a change in the
machine: compare two runs' figures only where their probes agree.
"""

from __future__ import annotations

import statistics
import time


def _work(n: int) -> int:
    # Integer arithmetic, a dict and a list: the interpreter's common paths, no I/O.
    total = 0
    seen: dict[int, int] = {}
    items: list[int] = []
    for i in range(n):
        total += i * i % 7
        seen[i & 1023] = total
        items.append(total)
        if len(items) > 512:
            items.clear()
    return total + len(seen)


def probe_ms(rounds: int = 5, n: int = 150_000) -> float:
    """Median wall time, in ms, of ``rounds`` runs of the fixed workload (about 20 ms each on
    an idle core of this machine). Lower is faster."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        _work(n)
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def spread(readings: dict[str, float]) -> float | None:
    """The slowest reading over the fastest (1.0 = the machine's speed did not move)."""
    vals = [v for v in readings.values() if v > 0]
    return round(max(vals) / min(vals), 2) if vals else None
