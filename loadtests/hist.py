"""Latency histograms: HdrHistograms in microseconds, mergeable across worker processes.

Each worker records into its own :class:`Histograms`; at the end it sends ``encode()`` (the
standard compressed, base64 HdrHistogram encoding) to the parent, which ``merge``s them.
Percentiles of the merged histogram are exact to 3 significant digits, which averaging
per-worker percentiles would not be.
"""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 120_000_000  # two minutes: anything slower is clamped (and counted as such)
SIGNIFICANT = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def new() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


class Histograms:
    """Named latency histograms (values in microseconds)."""

    def __init__(self) -> None:
        self.h: dict[str, HdrHistogram] = {}
        self.clamped = 0

    def get(self, name: str) -> HdrHistogram:
        hist = self.h.get(name)
        if hist is None:
            hist = self.h[name] = new()
        return hist

    def record_ns(self, name: str, ns: int) -> None:
        self.record_us(name, ns // 1000)

    def record_us(self, name: str, us: int) -> None:
        if us < LOWEST_US:
            us = LOWEST_US
        elif us > HIGHEST_US:
            us = HIGHEST_US
            self.clamped += 1
        self.get(name).record_value(us)

    def count(self, name: str) -> int:
        hist = self.h.get(name)
        return 0 if hist is None else int(hist.get_total_count())

    def encode(self) -> dict[str, str]:
        return {name: hist.encode().decode("ascii") for name, hist in self.h.items()}

    def merge(self, encoded: dict[str, str]) -> None:
        for name, data in encoded.items():
            self.get(name).add(HdrHistogram.decode(data.encode("ascii")))

    def reset(self) -> None:
        for hist in self.h.values():
            hist.reset()

    def summary(self, name: str, seconds: float | None = None) -> dict[str, Any]:
        return summarize(self.get(name), seconds)


def summarize(hist: HdrHistogram, seconds: float | None = None) -> dict[str, Any]:
    """count, p50/p90/p99/p99.9/max/mean in milliseconds, and rate per second if timed."""
    n = int(hist.get_total_count())
    out: dict[str, Any] = {"count": n}
    for label, pct in PERCENTILES:
        out[f"{label}_ms"] = round(hist.get_value_at_percentile(pct) / 1000, 3) if n else None
    out["max_ms"] = round(hist.get_max_value() / 1000, 3) if n else None
    out["mean_ms"] = round(hist.get_mean_value() / 1000, 3) if n else None
    if seconds:
        out["rate_per_s"] = round(n / seconds, 1)
    return out
