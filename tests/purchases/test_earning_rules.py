"""Slice 3: earning rules as worked examples (pure: no I/O). Rate 1 point per currency unit
unless said; prices in cents (the programme's currency is USD unless said)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.programme import Programme, Rule, Tier
from gateway.purchases import compute
from protocol.messages import SaleLine

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATTE = SaleLine(sku="latte", qty=2, price=450, category="coffee")  # 9.00
BAGEL = SaleLine(sku="bagel", qty=1, price=300, category="bakery")  # 3.00


def prog(**kw: object) -> Programme:
    return Programme(merchant="m", **kw)  # type: ignore[arg-type]


def rules(points: object) -> dict[str, int]:
    return {b.rule: b.points for b in points.breakdown}  # type: ignore[attr-defined]


def test_base_rate_floors() -> None:
    got = compute(prog(), 12_345, [], at=NOW)
    assert (got.points, rules(got)) == (123, {"base": 123})
    got = compute(prog(points_per_unit=Decimal("2.5")), 1_999, [], at=NOW)
    assert got.points == 49  # 19.99 * 2.5 = 49.975


def test_category_multiplier() -> None:
    p = prog(rules=(Rule(id="c2", kind="category", category="coffee", multiplier=Decimal(2)),))
    got = compute(p, 1_200, [LATTE, BAGEL], at=NOW)
    # base 9 + 3, coffee doubles the latte's 9
    assert (got.points, rules(got)) == (21, {"base": 12, "category:coffee": 9})


def test_product_rule_beats_category_rule() -> None:
    p = prog(
        rules=(
            Rule(id="c2", kind="category", category="coffee", multiplier=Decimal(2)),
            Rule(id="p3", kind="product", sku="latte", multiplier=Decimal(3)),
        )
    )
    got = compute(p, 1_200, [LATTE, BAGEL], at=NOW)
    assert (got.points, rules(got)) == (30, {"base": 12, "product:latte": 18})
    assert next(b for b in got.breakdown if b.rule == "product:latte").sku == "latte"


def test_multipliers_stack_by_multiplication_category_tier_promotion() -> None:
    p = prog(
        rules=(
            Rule(id="c2", kind="category", category="coffee", multiplier=Decimal(2)),
            Rule(id="double", kind="promotion", multiplier=Decimal(2)),
        ),
        tiers=(Tier("gold", "Gold", 500, Decimal("1.5")),),
    )
    got = compute(p, 1_200, [LATTE, BAGEL], tier="gold", at=NOW)
    # latte: 9 * 2 * 1.5 * 2 = 54 -> base 9, category +9, tier +9, promo +27
    # bagel: 3 * 1.5 * 2 = 9      -> base 3, tier +1.5 (floor 1), promo +4.5 (floor 4)
    assert rules(got) == {"base": 12, "category:coffee": 9, "tier:gold": 10, "promo:double": 31}
    assert got.points == 62  # exact 63, two half points floored per line


def test_rounding_per_line_versus_per_sale() -> None:
    lines = [SaleLine(sku=s, qty=1, price=150) for s in "abc"]  # 1.5 points each
    assert compute(prog(rounding="line"), 450, lines, at=NOW).points == 3
    assert compute(prog(rounding="sale"), 450, lines, at=NOW).points == 4
    p = prog(
        rounding="sale",
        rules=(Rule(id="x", kind="promotion", multiplier=Decimal("1.5")),),
    )
    got = compute(p, 450, lines, at=NOW)
    assert rules(got) == {"base": 4, "promo:x": 2}  # 4.5 -> 4, 2.25 -> 2


def test_time_boxed_bonus_today_only_and_min_total() -> None:
    today = Rule(
        id="today",
        kind="promotion",
        bonus=100,
        min_total=1_000,
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
    )
    p = prog(rules=(today,))
    assert rules(compute(p, 1_200, [], at=NOW)) == {"base": 12, "promo:today": 100}
    assert compute(p, 1_200, [], at=NOW + timedelta(hours=2)).points == 12
    assert compute(p, 999, [], at=NOW).points == 9


def test_promotion_filtered_by_category_and_tier() -> None:
    p = prog(
        rules=(
            Rule(id="bake", kind="promotion", category="bakery", multiplier=Decimal(3)),
            Rule(id="gold-bonus", kind="promotion", bonus=50, tier="gold"),
        ),
        tiers=(Tier("gold", "Gold", 500, Decimal(1)),),
    )
    assert rules(compute(p, 1_200, [LATTE, BAGEL], at=NOW)) == {"base": 12, "promo:bake": 6}
    got = compute(p, 1_200, [LATTE, BAGEL], tier="gold", at=NOW)
    assert got.points == 68


def test_cap_per_sale() -> None:
    got = compute(prog(max_points_per_sale=50), 10_000, [], at=NOW)
    assert (got.points, rules(got)) == (50, {"base": 100, "cap": -50})


def test_discount_on_total_spreads_over_lines() -> None:
    p = prog(rules=(Rule(id="c2", kind="category", category="coffee", multiplier=Decimal(2)),))
    got = compute(p, 600, [LATTE, BAGEL], at=NOW)  # half price overall
    # latte paid 4.50 (base 4, +4), bagel 1.50 (base 1)
    assert (got.points, rules(got)) == (9, {"base": 5, "category:coffee": 4})


def test_sale_rounding_is_exact_over_shares_that_do_not_terminate() -> None:
    """Found in review: each line's share of the total was a 28-digit decimal, so three thirds
    of one point added up to 0.999... and floored to 0; 11 of 30,000 random sales were one
    point short. The sum of the lines' shares is the total, exactly."""
    import random
    from fractions import Fraction

    thirds = [SaleLine(sku=s, qty=1, price=1) for s in "abc"]
    assert compute(prog(rounding="sale"), 100, thirds, at=NOW).points == 1
    promo = prog(rounding="sale", rules=(Rule(id="x3", kind="promotion", multiplier=Decimal(3)),))
    assert compute(promo, 300, thirds, at=NOW).points == 9
    rng = random.Random(7)
    for _ in range(3_000):
        lines = [
            SaleLine(sku=f"s{i}", qty=rng.randint(1, 5), price=rng.randint(1, 999))
            for i in range(rng.randint(2, 7))
        ]
        total = rng.randint(1, 20_000)
        rate = Decimal(rng.choice(["1", "2", "0.5", "3", "1.5", "10", "0.3333"]))
        got = compute(prog(rounding="sale", points_per_unit=rate), total, lines, at=NOW)
        assert got.points == int(Fraction(total, 100) * Fraction(rate) // 1), (total, lines)


def test_both_roundings_match_an_exact_reference_with_stacked_multipliers() -> None:
    import math
    import random
    from fractions import Fraction

    rng = random.Random(11)
    for _ in range(1_500):
        rate = Decimal(rng.choice(["1", "0.5", "1.25", "0.3333", "7"]))
        cat = Decimal(rng.choice(["1.5", "2", "0.75", "1.1111"]))
        tier = Tier(
            id="t", name="T", threshold=0, multiplier=Decimal(rng.choice(["1.2", "2", "1.0001"]))
        )
        lines = [
            SaleLine(
                sku=f"s{i}",
                qty=rng.randint(1, 4),
                price=rng.randint(1, 5_000),
                category=rng.choice(["coffee", "tea"]),
            )
            for i in range(rng.randint(1, 6))
        ]
        total = rng.randint(1, 50_000)
        rules_ = (Rule(id="c", kind="category", category="coffee", multiplier=cat),)
        whole = sum(ln.qty * ln.price for ln in lines)
        base, extra_c, extra_t = [], [], []
        for ln in lines:
            b = Fraction(ln.qty * ln.price * total, whole) / 100 * Fraction(rate)
            m = Fraction(cat) if ln.category == "coffee" else Fraction(1)
            base.append(b)
            extra_c.append(b * (m - 1))
            extra_t.append(b * m * (Fraction(tier.multiplier) - 1))

        def toward_zero(x: Fraction) -> int:  # gains floored, losses never beyond their share
            return math.floor(x) if x >= 0 else -math.floor(-x)

        exact = sum(base) + sum(extra_c) + sum(extra_t)
        for rounding in ("sale", "line"):
            p = prog(rounding=rounding, points_per_unit=rate, rules=rules_, tiers=(tier,))
            got = compute(p, total, lines, tier="t", at=NOW)
            if rounding == "sale":
                want = sum(toward_zero(sum(parts)) for parts in (base, extra_c, extra_t))
            else:
                want = sum(toward_zero(x) for parts in (base, extra_c, extra_t) for x in parts)
            want = min(want, math.floor(exact))  # never above the exact points
            assert got.points == max(0, want), (rounding, rate, cat, tier, total, lines)
            assert sum(b.points for b in got.breakdown) == got.points


@pytest.mark.parametrize("rounding", ["line", "sale"])
def test_an_excluded_line_takes_no_points_from_the_others(rounding: str) -> None:
    """A multiplier-0 line's loss was floored: -2.5 became -3, and a coffee for 10 points with
    a 2.50 excluded item earned 9 (found in review)."""
    rules_ = (Rule(id="no-tobacco", kind="category", category="tobacco", multiplier=Decimal(0)),)
    p = prog(rounding=rounding, rules=rules_)
    coffee = SaleLine(sku="beans", qty=1, price=1_000, category="coffee")
    tobacco = SaleLine(sku="cigs", qty=1, price=250, category="tobacco")
    assert compute(p, 1_000, [coffee], at=NOW).points == 10
    both = compute(p, 1_250, [coffee, tobacco], at=NOW)
    assert both.points == 10, both.breakdown
    assert sum(b.points for b in both.breakdown) == 10
    alone = compute(p, 250, [tobacco], at=NOW)
    assert alone.points == 0, alone.breakdown


def test_amounts_are_in_the_minor_units_of_the_programmes_currency() -> None:
    """Found in review: every currency was counted in hundredths, though the rate is points per
    whole unit: a JPY programme (no minor unit) at rate 1 gave 10 points for ¥1000, a KWD one
    (3 decimals) 10 points for 1.000 KWD."""
    got = compute(prog(currency="JPY"), 1_000, [], at=NOW)  # ¥1000
    assert (got.points, rules(got)) == (1_000, {"base": 1_000})
    got = compute(prog(currency="KWD"), 1_000, [], at=NOW)  # 1.000 KWD
    assert (got.points, rules(got)) == (1, {"base": 1})
    assert compute(prog(currency="KWD"), 12_345, [], at=NOW).points == 12  # 12.345 KWD
    assert compute(prog(currency="CLF"), 25_000, [], at=NOW).points == 2  # 2.5000 CLF
    # 2 decimals as before: 123.45 earns 123
    for code in ("USD", "EUR", "GBP"):
        assert compute(prog(currency=code), 12_345, [], at=NOW).points == 123, code
    # a rate with decimals, floored as ever: 1.999 KWD * 2.5 = 4.9975; ¥1999 * 2.5 = 4997.5
    rate = Decimal("2.5")
    assert compute(prog(currency="KWD", points_per_unit=rate), 1_999, [], at=NOW).points == 4
    assert compute(prog(currency="JPY", points_per_unit=rate), 1_999, [], at=NOW).points == 4_997


def test_lines_rules_and_a_min_total_in_yen() -> None:
    coffee = SaleLine(sku="latte", qty=2, price=450, category="coffee")  # ¥900
    bun = SaleLine(sku="bun", qty=1, price=300, category="bakery")  # ¥300
    p = prog(
        currency="JPY",
        rules=(
            Rule(id="c2", kind="category", category="coffee", multiplier=Decimal(2)),
            Rule(id="big", kind="promotion", bonus=100, min_total=1_000),  # ¥1000 or more
        ),
    )
    got = compute(p, 1_200, [coffee, bun], at=NOW)
    assert rules(got) == {"base": 1_200, "category:coffee": 900, "promo:big": 100}
    assert got.points == 2_200
    got = compute(p, 600, [coffee, bun], at=NOW)  # half price overall: ¥450 + ¥150, under ¥1000
    assert rules(got) == {"base": 600, "category:coffee": 450}


def test_a_currency_code_stored_before_codes_were_checked_counts_two_decimals() -> None:
    """The admin API took any three capitals before; such a programme earns as it did."""
    assert compute(prog(currency="ZZZ"), 12_345, [], at=NOW).points == 123


def test_minor_unit_exponents_are_iso_4217s() -> None:
    from gateway.programme import exponent, minor_per_unit

    not_two = (
        ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF", 0),
        ("BHD IQD JOD KWD LYD OMR TND", 3),
        ("CLF UYW", 4),
    )
    for codes, want in not_two:
        for code in codes.split():
            assert exponent(code) == want, code
    for code in ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "CNY", "INR", "MXN", "BRL"):
        assert exponent(code) == 2, code
    for code in ("ZZZ", "XAU", "XDR", "XTS", "XXX", "usd", ""):  # unknown, or no minor unit
        assert exponent(code) is None, code
    assert (minor_per_unit("JPY"), minor_per_unit("USD"), minor_per_unit("KWD")) == (1, 100, 1000)
    assert minor_per_unit("ZZZ") == 100


def test_points_are_the_whole_units_times_the_rate_floored_in_any_currency() -> None:
    import random
    from fractions import Fraction

    rng = random.Random(3)
    for _ in range(2_000):
        code, digits = rng.choice([("JPY", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("CLF", 4)])
        rate = Decimal(rng.choice(["1", "2", "0.5", "1.5", "10", "0.3333"]))
        lines = [
            SaleLine(sku=f"s{i}", qty=rng.randint(1, 5), price=rng.randint(1, 99_999))
            for i in range(rng.randint(0, 5))
        ]
        total = rng.randint(0, 2_000_000)
        p = prog(currency=code, rounding="sale", points_per_unit=rate)
        got = compute(p, total, lines, at=NOW)
        want = Fraction(total, 10**digits) * Fraction(rate) // 1
        assert got.points == min(want, 10_000_000), (code, rate, total, lines)
