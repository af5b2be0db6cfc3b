"""Matching each push to the reply that caused it, inside one generator process.

A worker runs the POS flows for its own members and holds the sessions watching them, so a
``balance_changed`` push and the reply that caused it meet here by ``(member, version)``. The
push lag is receipt time minus reply time. A push can arrive before its reply (another node
delivered it first); it then waits in ``early`` and counts as lag 0.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from loadtests.hist import Histograms
from protocol.messages import Balance

#: Pushes not matched to a reply within this many seconds are forgotten (other writers).
MATCH_WINDOW_NS = 30 * 1_000_000_000
#: Raw push lags kept for the live progress lines.
RECENT_MAX = 100_000

Key = tuple[str, int]
Seen = tuple[int, int, int, int]  # posted, held, available, version


class PushMatcher:
    def __init__(self, hist: Histograms, counters: Counter[str], recent: list[int]) -> None:
        self.hist = hist
        self.counters = counters
        self.recent = recent
        #: Pushes received before this monotonic time (the warmup) are not recorded.
        self.record_from = 0
        self.reply_at: dict[Key, int] = {}
        self.reply_order: deque[tuple[int, Key]] = deque()
        self.early: dict[Key, list[int]] = {}
        #: The newest balance each member's replies carried.
        self.last_replies: dict[str, Seen] = {}

    def push(self, key: Key, now: int) -> None:
        t = self.reply_at.get(key)
        if t is not None:
            self._lag(now - t)
        else:
            self.early.setdefault(key, []).append(now)

    def reply(self, member: str, balance: Balance | None, t_reply: int) -> None:
        if balance is None:
            return
        self.seen(member, (balance.posted, balance.held, balance.available, balance.version))
        key = (member, balance.version)
        self.reply_at[key] = t_reply
        self.reply_order.append((t_reply, key))
        for t in self.early.pop(key, ()):
            self.counters["push_before_reply"] += 1
            self._lag(max(0, t - t_reply))
        cutoff = t_reply - MATCH_WINDOW_NS
        while self.reply_order and self.reply_order[0][0] < cutoff:
            _, old = self.reply_order.popleft()
            self.reply_at.pop(old, None)

    def seen(self, member: str, balance: Seen) -> None:
        """A reply showed ``member`` at ``balance`` (kept if newest)."""
        prev = self.last_replies.get(member)
        if prev is None or balance[3] > prev[3]:
            self.last_replies[member] = balance

    def unmatched(self) -> int:
        return sum(len(v) for v in self.early.values())

    def _lag(self, ns: int) -> None:
        if time.monotonic_ns() < self.record_from:
            return
        self.hist.record_ns("push", ns)
        if len(self.recent) < RECENT_MAX:
            self.recent.append(ns)
