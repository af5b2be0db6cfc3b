"""Reconnect delays: exponential with full jitter (the AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random


class Backoff:
    """``delay(n)`` for the ``n``-th consecutive failed attempt (from 0): a uniform random value
    in ``[0, min(cap, base * 2**n))``, so many terminals cut off at once do not come back at
    once. Defaults: base 0.5 s, cap 20 s."""

    def __init__(
        self, base: float = 0.5, cap: float = 20.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * 2.0 ** min(attempt, 62))

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(0.0, self.ceiling(attempt))
