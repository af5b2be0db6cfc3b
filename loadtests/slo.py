"""SLO thresholds: ``reserve.p99<10ms``, ``push.p99.9<=15ms``, ``errors.rate<0.1%``, ...

Grammar: ``METRIC.STAT OP VALUE[UNIT]``.

* latency: METRIC is a histogram name from the report (``reserve``, ``commit``, ``release``,
  ``sale``, ``balance``, ``flow``, ``push``, ``reconnect``, ``broadcast``, ``connect``), STAT one
  of ``p50 p90 p99 p99.9 max mean``, VALUE with unit ``us``, ``ms`` (default) or ``s``;
* ``<metric>.rate`` / ``<metric>.count``: throughput per second / count of a histogram;
* ``errors.rate`` (errors / (commands sent + reconnects tried), VALUE in % or a fraction),
  ``errors.count``;
* ``dropped.count``, ``dropped.rate``, ``late.count``, ``late.rate`` (rates per arrival: flows
  scheduled + dropped); ``broadcast.last`` (ms to the last receipt).

OP is ``<``, ``<=``, ``>`` or ``>=``. A metric the run did not measure is a breach (``missing``):
an SLO nobody measured must not pass silently.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SLO = re.compile(
    r"^\s*(?P<metric>[a-z_][a-z0-9_]*)\.(?P<stat>p\d+(?:\.\d+)?|max|mean|rate|count|last)\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s|%|/s)?\s*$"
)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Slo:
    text: str
    metric: str
    stat: str
    op: str
    value: float
    """Latency thresholds in milliseconds; error rates as a fraction; counts as counts."""

    def check(self, actual: float) -> bool:
        return _OPS[self.op](actual, self.value)


def parse_slo(text: str) -> Slo:
    m = _SLO.match(text)
    if not m:
        raise ValueError(
            f"bad SLO {text!r}: expected e.g. 'reserve.p99<10ms', 'errors.rate<0.1%', "
            "'push.p99.9<=15ms', 'checkout.rate>=1900'"
        )
    metric, stat, op, unit = m["metric"], m["stat"], m["op"], m["unit"]
    value = float(m["value"])
    if stat.startswith("p") or stat in ("max", "mean", "last"):
        if unit in ("%", "/s"):
            raise ValueError(f"bad SLO {text!r}: latency needs a time unit (us, ms, s)")
        if stat.startswith("p") and not 0 < float(stat[1:]) <= 100:
            raise ValueError(f"bad SLO {text!r}: percentile must be in (0, 100]")
        value *= _UNIT_MS[unit]
    elif stat == "rate" and metric in ("errors", "late", "dropped"):
        if unit == "%":
            value /= 100.0
        elif unit is not None:
            raise ValueError(f"bad SLO {text!r}: an error rate is a fraction or a percentage")
    elif unit in ("us", "ms", "s", "%"):
        raise ValueError(f"bad SLO {text!r}: {stat} takes no time unit or percentage")
    return Slo(text.strip(), metric, stat, op, value)


def actual_value(slo: Slo, report: dict[str, Any]) -> float | None:
    """The measured value an SLO is about, from a run report (None if not measured)."""
    counters = report.get("counters", {})
    if slo.metric in ("errors", "late", "dropped"):
        n = counters.get("errors_total" if slo.metric == "errors" else slo.metric, 0)
        if slo.stat == "count":
            return float(n)
        if slo.stat == "rate":
            if slo.metric == "errors":  # per thing tried: commands sent and reconnects
                base = counters.get("commands_sent", 0) + counters.get("reconnects_attempted", 0)
            else:  # per arrival: each is either scheduled or dropped, and may be late
                base = counters.get("scheduled", 0) + counters.get("dropped", 0)
            if not base:
                return 1.0 if n else 0.0  # errors with nothing tried: all of it failed
            return float(n) / base
        return None
    if slo.metric == "broadcast" and slo.stat == "last":
        last = report.get("broadcast", {}).get("last_receipt_ms")
        return None if last is None else float(last)
    lat = report.get("latency", {}).get(slo.metric)
    if not lat or not lat.get("count"):
        return None
    if slo.stat == "count":
        return float(lat["count"])
    if slo.stat == "rate":
        return lat.get("rate_per_s")
    key = {"max": "max_ms", "mean": "mean_ms"}.get(slo.stat, f"{slo.stat}_ms")
    if key not in lat:  # a percentile outside the standard set
        return None
    return lat[key]


def evaluate(slos: list[Slo], report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for slo in slos:
        actual = actual_value(slo, report)
        ok = actual is not None and slo.check(actual)
        out.append(
            {
                "slo": slo.text,
                "actual": actual,
                "threshold": slo.value,
                "ok": ok,
                "status": "pass" if ok else ("missing" if actual is None else "breach"),
            }
        )
    return out
