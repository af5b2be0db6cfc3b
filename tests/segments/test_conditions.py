"""Worked examples of each kind of condition, on the one pure evaluation (``matches``) the
live path and the full recompute share; RFM scores; bad definitions refused whole."""

from __future__ import annotations

import pytest

from gateway.aggregates import Feature
from gateway.errors import Refused
from gateway.members import MemberFacts
from gateway.segments import Cuts, Facts, matches, parse, score

TODAY = 20_000  # 2024-10-04
KITCHEN_180 = Feature("c", "kitchen", "units", TODAY - 179)


def facts(
    figures: dict[Feature, int | None] | None = None, available: int = 0, **member: object
) -> Facts:
    base: dict[str, object] = {
        "member": "m1",
        "tier": "",
        "consent_email": False,
        "consent_sms": False,
        "birth_month": None,
        "preferred_store": "",
        "enrolled_channel": "pos",
        "enrolled_store": "s1",
        "time_zone": "",
    }
    base.update(member)
    return Facts(
        member=MemberFacts(**base),  # type: ignore[arg-type]
        available=available,
        figures=figures or {},
        today=TODAY,
        month=10,
        cuts=Cuts((10, 30, 90, 180), (1, 2, 4, 8), (1_000, 5_000, 20_000, 50_000)),
    )


def m(cond: str, f: Facts) -> bool:
    return matches(parse(cond.encode()), f)


def test_spend_and_visits_within_a_window():
    spent = {Feature("t", "", "spend", TODAY - 364): 12_000, Feature("t", "", "visits"): 3}
    assert m('{"type": "spend", "min": 10000, "within_days": 365}', facts(spent))
    assert not m('{"type": "spend", "min": 10000, "within_days": 365}', facts())
    assert m('{"type": "spend", "max": 12000, "within_days": 365}', facts(spent))
    assert m('{"type": "visits", "min": 3}', facts(spent))
    assert not m('{"type": "visits", "min": 3, "max": 2}'.replace(', "max": 2', ""), facts())


def test_recency_counts_days_since_the_latest_purchase():
    last = {Feature("t", "", "last"): TODAY - 40}
    assert m('{"type": "recency", "min_days": 30}', facts(last))  # lapsed
    assert not m('{"type": "recency", "max_days": 30}', facts(last))
    assert m('{"type": "recency", "max_days": 40}', facts(last))
    assert m('{"type": "recency", "never": true}', facts({Feature("t", "", "last"): None}))
    assert not m('{"type": "recency", "min_days": 0}', facts({Feature("t", "", "last"): None}))


def test_rfm_scores_by_quintile_boundaries():
    assert score(None, (1, 2, 3, 4)) == 1
    assert [score(v, (1, 2, 4, 8)) for v in (0, 1, 2, 3, 8, 9)] == [1, 1, 2, 3, 4, 5]
    assert [score(d, (10, 30, 90, 180), True) for d in (0, 10, 11, 200)] == [5, 5, 4, 1]
    year = TODAY - 364
    top = {
        Feature("t", "", "last"): TODAY - 2,
        Feature("t", "", "visits", year): 9,
        Feature("t", "", "spend", year): 60_000,
    }
    assert m('{"type": "rfm", "score": "recency", "min": 5}', facts(top))
    assert m('{"type": "rfm", "score": "frequency", "min": 5}', facts(top))
    assert m('{"type": "rfm", "score": "monetary", "min": 4, "max": 5}', facts(top))
    assert m('{"type": "rfm", "score": "monetary", "max": 1}', facts())


def test_bought_a_category_brand_or_sku():
    f = facts({KITCHEN_180: 3, Feature("b", "acme", "spend"): 900})
    assert m(
        '{"type": "bought", "of": "category", "key": "kitchen", "min": 3, "within_days": 180}', f
    )
    assert not m(
        '{"type": "bought", "of": "category", "key": "kitchen", "min": 4, "within_days": 180}', f
    )
    assert m('{"type": "bought", "of": "brand", "key": "acme", "measure": "spend", "min": 900}', f)
    assert not m('{"type": "bought", "of": "sku", "key": "pan"}', f)


def test_channel_mix():
    both = facts({Feature("h", "web", "visits"): 1, Feature("h", "pos", "visits"): 2})
    store_only = facts({Feature("h", "pos", "visits"): 2})
    omni = '{"type": "channels", "online": true, "in_store": true}'
    assert m(omni, both) and not m(omni, store_only)
    assert m('{"type": "channels", "online": false}', store_only)


def test_tier_points_birthday_consent_attributes():
    assert m('{"type": "tier", "in": ["gold", "silver"]}', facts(tier="gold"))
    assert m('{"type": "tier", "in": [""]}', facts())
    assert m('{"type": "points", "min": 100}', facts(available=150))
    assert not m('{"type": "points", "min": 100}', facts(available=99))
    assert m('{"type": "birthday_month"}', facts(birth_month=10))
    assert not m('{"type": "birthday_month"}', facts(birth_month=11))
    assert m('{"type": "consent", "channel": "email"}', facts(consent_email=True))
    assert not m('{"type": "consent", "channel": "sms"}', facts(consent_email=True))
    assert m(
        '{"type": "attribute", "name": "preferred_store", "in": ["s9"]}',
        facts(preferred_store="s9"),
    )


def test_the_worked_example_and_nesting():
    kitchen = (
        '{"type": "all", "conditions": ['
        '{"type": "spend", "min": 50000, "within_days": 365},'
        '{"type": "bought", "of": "category", "key": "kitchen", "min": 3, "within_days": 180},'
        '{"type": "consent", "channel": "email"}]}'
    )
    fan = facts(
        {Feature("t", "", "spend", TODAY - 364): 60_000, KITCHEN_180: 3}, consent_email=True
    )
    assert m(kitchen, fan)
    assert not m(kitchen, facts({Feature("t", "", "spend", TODAY - 364): 60_000, KITCHEN_180: 3}))
    assert m('{"type": "not", "condition": ' + kitchen + "}", facts())
    assert m('{"type": "any", "conditions": [{"type": "birthday_month"}, ' + kitchen + "]}", fan)


@pytest.mark.parametrize(
    "bad",
    [
        '{"type": "loyal"}',  # unknown condition
        '{"type": "spend"}',  # no bound
        '{"type": "spend", "min": 5, "max": 4}',
        '{"type": "spend", "min": 5, "within_days": 0}',
        '{"type": "spend", "min": -1}',
        '{"type": "bought", "of": "colour", "key": "red"}',
        '{"type": "bought", "of": "sku", "key": "bad key"}',
        '{"type": "rfm", "score": "recency", "min": 6}',
        '{"type": "recency", "never": true, "max_days": 3}',
        '{"type": "channels"}',
        '{"type": "consent", "channel": "email", "extra": 1}',
        '{"type": "all", "conditions": []}',
        '{"type": "not", "condition": {"type": "not", "condition": {"type": "not", "condition": '
        '{"type": "not", "condition": {"type": "not", "condition": {"type": "not", "condition": '
        '{"type": "birthday_month"}}}}}}}',
        '{"type": "any", "conditions": [' + ",".join(['{"type": "birthday_month"}'] * 33) + "]}",
    ],
)
def test_bad_definitions_are_refused_whole(bad: str):
    with pytest.raises(Refused) as exc:
        parse(bad.encode())
    assert exc.value.code == "invalid_field"
