"""The prediction of when a member runs out of a replenishable product, as a pure function of
what the member bought (``predict``), so it can be shown on worked examples
(docs/reorder.md, tests/reorder/test_predict.py).

1. Purchases of the product less than a day after the previous one count as one purchase
   (a till sale and a web order of the same morning are one restock), their units added.
2. Each gap between two purchases is divided by the units bought at its start: days per
   unit (two bags last twice as long as one).
3. With at least ``MIN_OWN_INTERVALS`` gaps the member's own median days per unit is used
   (``member``): the median, not the mean, so one odd gap (a holiday, a bag bought
   elsewhere) does not move it. Else the product's population figure (``population``): the
   75th percentile of its buyers' own medians, once it has ``MIN_BUYERS`` buyers with a gap
   (a reminder a little late is better than one before the shelf is empty, as Stamped
   reasons). Else the catalogue's ``cycle_days`` (``catalogue``).
4. The predicted date is the last purchase + days per unit x the units bought then.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

#: Gaps of the member's own needed before its own median is used.
MIN_OWN_INTERVALS = 3
#: Buyers with a gap of their own a product needs before its percentile is used.
MIN_BUYERS = 20
#: The percentile of the buyers' days per unit the population figure takes.
POPULATION_PERCENTILE = 0.75
#: Purchases closer than this to the previous one are the same restock.
SAME_PURCHASE = timedelta(days=1)

Method = Literal["member", "population", "catalogue"]


@dataclass(frozen=True, slots=True)
class Population:
    """A product's buyers with a gap (``buyers``) and the percentile of their days per unit."""

    buyers: int
    per_unit_days: float


@dataclass(frozen=True, slots=True)
class Prediction:
    sku: str
    last_purchase_at: datetime
    units: int
    purchases: int
    intervals: int
    #: The member's own median days per unit (None with no gap yet).
    per_unit_days: float | None
    cycle_days: int
    predicted_at: datetime
    method: Method


def restocks(bought: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """Purchases (time, units), oldest first, those less than ``SAME_PURCHASE`` after the
    start of the previous restock merged into it."""
    out: list[tuple[datetime, int]] = []
    for at, qty in sorted(bought):
        if out and at - out[-1][0] < SAME_PURCHASE:
            out[-1] = (out[-1][0], out[-1][1] + qty)
        else:
            out.append((at, qty))
    return out


def whole_seconds(at: datetime) -> datetime:
    return at - timedelta(microseconds=at.microsecond)


def predict(
    sku: str,
    bought: Sequence[tuple[datetime, int]],
    cycle_days: int,
    population: Population | None = None,
    min_buyers: int = MIN_BUYERS,
) -> Prediction:
    """When the member runs out of ``sku``, from its purchases (time, units; at least one)."""
    stock = restocks(bought)
    if not stock:
        raise ValueError("a prediction needs at least one purchase")
    gaps = [(b[0] - a[0]).total_seconds() / 86400 / a[1] for a, b in itertools.pairwise(stock)]
    own = statistics.median(gaps) if gaps else None
    method: Method
    if own is not None and len(gaps) >= MIN_OWN_INTERVALS:
        per_unit, method = own, "member"
    elif population is not None and population.buyers >= min_buyers:
        per_unit, method = population.per_unit_days, "population"
    else:
        per_unit, method = float(cycle_days), "catalogue"
    last, units = stock[-1]
    return Prediction(
        sku=sku,
        last_purchase_at=last,
        units=units,
        purchases=len(stock),
        intervals=len(gaps),
        per_unit_days=own,
        cycle_days=cycle_days,
        predicted_at=whole_seconds(last + timedelta(seconds=86400 * per_unit * units)),
        method=method,
    )


__all__ = [
    "MIN_BUYERS",
    "MIN_OWN_INTERVALS",
    "POPULATION_PERCENTILE",
    "SAME_PURCHASE",
    "Method",
    "Population",
    "Prediction",
    "predict",
    "restocks",
    "whole_seconds",
]
