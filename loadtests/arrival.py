"""Open-loop arrival schedules: constant rates and linear ramps, in stages.

The load generator sends on a fixed timetable computed up front, whatever the server does: a
slow reply never delays the next send (no coordinated omission), and every latency is measured
from the *scheduled* send time, so time the generator spent behind schedule counts against the
server, as it would for a real shopper.

A stage runs for ``duration`` seconds at a rate that goes linearly from ``start`` to ``end``
arrivals per second (``start == end``: constant). Arrival *n* of a stage (n = 1, 2, ...) is
due when the expected count ``start*t + (end-start)*t**2/(2*duration)`` reaches *n*.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stage:
    duration: float
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.duration < 0 or self.start < 0 or self.end < 0:
            raise ValueError("stage duration and rates must be >= 0")

    @property
    def expected(self) -> float:
        """Arrivals this stage is expected to produce."""
        return (self.start + self.end) / 2 * self.duration

    def offset(self, n: float) -> float:
        """Seconds into the stage at which the expected count reaches ``n``."""
        a = (self.end - self.start) / (2 * self.duration) if self.duration else 0.0
        b = self.start
        if abs(a) < 1e-12:
            return n / b
        disc = b * b + 4 * a * n
        return (-b + math.sqrt(max(disc, 0.0))) / (2 * a)


def schedule(stages: list[Stage], scale: float = 1.0, phase: float = 0.0) -> Iterator[float]:
    """Yield arrival times (seconds from the start of the first stage), in order.

    ``scale`` multiplies every rate (a worker's share of the total). ``phase`` in [0, 1) shifts
    the arrivals by a fraction of one inter-arrival, so workers sharing a rate interleave.
    """
    base = 0.0
    for st in stages:
        stage = Stage(st.duration, st.start * scale, st.end * scale)
        total = stage.expected
        n = phase if phase > 0 else 1.0
        while n <= total + 1e-9 and stage.duration > 0:
            t = stage.offset(n)
            if t > stage.duration:
                break
            yield base + t
            n += 1.0
        base += stage.duration


async def paced(
    stages: list[Stage], t0: int, scale: float = 1.0, phase: float = 0.0
) -> AsyncIterator[tuple[int, int, int]]:
    """Open loop: sleep until each arrival of ``schedule`` (from ``t0``, monotonic ns) and yield
    ``(index, due_ns, now_ns)``. Behind schedule it does not sleep: it yields to the event loop
    every 32 arrivals and hands out the late ones at once. ``now - due`` is how late."""
    for n, offset in enumerate(schedule(stages, scale, phase)):
        due = t0 + int(offset * 1e9)
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
            now = time.monotonic_ns()
        elif n % 32 == 0:
            await asyncio.sleep(0)
        yield n, due, now


def total_duration(stages: list[Stage]) -> float:
    return sum(s.duration for s in stages)


def expected_count(stages: list[Stage]) -> float:
    return sum(s.expected for s in stages)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """``"30"``, ``"30s"``, ``"1.5m"``, ``"500ms"``, ``"1h"`` -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 500ms)")
    value = float(m.group(1))
    unit = m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit]


def parse_stages(text: str) -> list[Stage]:
    """``"5s:0->2000,30s:2000,5s:2000->0"``: comma-separated ``DURATION:RATE`` (constant) or
    ``DURATION:FROM->TO`` (linear ramp), rates in arrivals per second."""
    stages = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            dur, rates = part.split(":", 1)
            if "->" in rates:
                lo, hi = rates.split("->", 1)
                stages.append(Stage(parse_duration(dur), float(lo), float(hi)))
            else:
                stages.append(Stage(parse_duration(dur), float(rates), float(rates)))
        except ValueError as exc:
            raise ValueError(
                f"bad stage {part!r}: {exc}; expected e.g. 10s:0->500 or 30s:500"
            ) from None
    return stages


def simple_stages(rate: float, duration: float, ramp: float = 0.0) -> list[Stage]:
    """A ramp from 0 to ``rate`` over ``ramp`` seconds, then ``duration`` seconds at ``rate``."""
    out = []
    if ramp > 0:
        out.append(Stage(ramp, 0.0, rate))
    out.append(Stage(duration, rate, rate))
    return out
