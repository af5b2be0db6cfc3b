"""The prediction on worked examples (the ones docs/reorder.md shows): the member's own median
days per unit with three gaps or more, quantity-adjusted; the product's population figure
before that; the catalogue's cycle before anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.reorder import Population, predict, restocks


def day(n: float) -> datetime:
    """``n`` days after 1 March 2027, 10:00 UTC."""
    return datetime(2027, 3, 1, 10, tzinfo=UTC) + timedelta(days=n)


def test_worked_example_member_median_of_days_per_unit() -> None:
    # coffee: 1 bag on day 0, 2 bags on day 30, 1 on day 90, 1 on day 118, 2 on day 150
    # gaps per unit: 30/1 = 30, 60/2 = 30, 28/1 = 28, 32/1 = 32 -> median 30 days per bag;
    # the last purchase was 2 bags: they last 60 days -> day 210
    p = predict(
        "coffee", [(day(0), 1), (day(30), 2), (day(90), 1), (day(118), 1), (day(150), 2)], 21
    )
    assert p.method == "member"
    assert p.intervals == 4 and p.purchases == 5 and p.units == 2
    assert p.per_unit_days == 30.0
    assert p.predicted_at == day(210)


def test_one_odd_gap_does_not_move_the_median() -> None:
    # regular 20-day gaps, then a 90-day holiday gap: the median stays 20
    bought = [(day(0), 1), (day(20), 1), (day(40), 1), (day(130), 1), (day(150), 1)]
    p = predict("serum", bought, 45)
    assert p.per_unit_days == 20.0
    assert p.predicted_at == day(170)
    # the mean would have said (20+20+90+20)/4 = 37.5


def test_fewer_than_three_gaps_use_the_population_then_the_catalogue() -> None:
    bought = [(day(0), 1), (day(25), 3)]  # one gap: 25 days per unit, not enough of its own
    pop = Population(buyers=20, per_unit_days=12.5)
    p = predict("ink", bought, 40, pop)
    assert p.method == "population" and p.per_unit_days == 25.0
    assert p.predicted_at == day(25 + 3 * 12.5)
    # a population of 19 buyers is not enough: the catalogue's 40 days a unit
    p = predict("ink", bought, 40, Population(buyers=19, per_unit_days=12.5))
    assert p.method == "catalogue"
    assert p.predicted_at == day(25 + 3 * 40)


def test_a_first_purchase_uses_the_catalogue_times_units() -> None:
    p = predict("food", [(day(0), 2)], 30)
    assert (p.method, p.intervals, p.per_unit_days) == ("catalogue", 0, None)
    assert p.predicted_at == day(60)


def test_purchases_less_than_a_day_apart_are_one_restock() -> None:
    # a till sale in the morning and a web order the same evening: 3 units on day 0
    assert restocks([(day(0.5), 2), (day(0), 1), (day(3), 1)]) == [(day(0), 3), (day(3), 1)]
    p = predict("coffee", [(day(0), 1), (day(0.4), 2)], 10)
    assert (p.purchases, p.units, p.predicted_at) == (1, 3, day(30))


def test_the_date_is_whole_seconds_and_no_purchase_is_refused() -> None:
    p = predict("x", [(day(0) + timedelta(microseconds=700), 1)], 1)
    assert p.predicted_at == day(1)
    with pytest.raises(ValueError):
        predict("x", [], 1)
