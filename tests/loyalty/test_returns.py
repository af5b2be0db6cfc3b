"""Slice 6: full and partial returns against the original sale reverse earned points in
proportion and restore spent points; the clawback is capped at what is available and the
uncollected remainder is reported."""

from __future__ import annotations

from tests.conftest import unique
from tests.loyalty.world import enrol, err, ok, phone, setup_db

LINES = [
    {"sku": "latte", "qty": 2, "price": 450, "category": "coffee"},
    {"sku": "bagel", "qty": 1, "price": 300, "category": "bakery"},
]


async def test_partial_then_full_return_by_lines(clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = f"s-{m}"
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 1_200, "lines": LINES})
    part = await ok(
        till,
        {
            "type": "return",
            "op": f"r1-{m}",
            "member": m,
            "sale": sale,
            "lines": [{"sku": "latte", "qty": 1}],
        },
    )
    # 450 of 1200 returned: floor(12 * 450 / 1200) = 4
    assert (part.clawback, part.restored, part.applied, part.uncollected) == (4, 0, -4, 0)
    assert part.balance.available == 8
    too_many = await err(
        till,
        {
            "type": "return",
            "op": f"r2-{m}",
            "member": m,
            "sale": sale,
            "lines": [{"sku": "latte", "qty": 2}],
        },
    )
    assert too_many.code == "return_exceeds_sale"
    rest = await ok(till, {"type": "return", "op": f"r3-{m}", "member": m, "sale": sale})
    assert (rest.clawback, rest.applied) == (8, -8)  # the last return settles the remainder
    assert rest.balance.posted == 0
    nothing = await err(till, {"type": "return", "op": f"r4-{m}", "member": m, "sale": sale})
    assert nothing.code == "return_exceeds_sale"
    page = await ok(till, {"type": "history", "member": m})
    p = page.purchases[0]
    assert p.returned_points == 12 and [ln.returned for ln in p.lines] == [2, 1]


async def test_return_after_partial_redemption_caps_clawback_and_reports_rest(
    clients, merchant, pg_dsn
):
    await setup_db(
        pg_dsn,
        "INSERT INTO rewards (merchant_id, id, cost, kind, value) VALUES ($1, 'r80', 80, 'amount_off', 500)",
        merchant,
    )
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": f"s-{m}", "member": m, "total": 10_000})
    await ok(till, {"type": "redeem_reward", "op": f"rw-{m}", "member": m, "reward": "r80"})
    frame = {"type": "return", "op": f"r-{m}", "member": m, "sale": f"s-{m}"}
    back = await ok(till, frame)
    assert (back.clawback, back.applied, back.uncollected) == (100, -20, 80)
    assert back.balance.available == 0 and back.balance.posted == 0
    assert await ok(till, frame) == back  # retry: same answer, applied once
    changed = await err(till, {**frame, "amount": 5})
    assert changed.code == "idempotency_conflict"


async def test_return_restores_points_spent_on_the_sale(clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": f"a-{m}", "member": m, "total": 50_000})  # 500
    hold = f"h-{m}"
    await ok(till, {"type": "reserve", "op": hold, "member": m, "points": 200})
    pay = f"c-{m}"
    await ok(till, {"type": "commit", "op": pay, "member": m, "hold": hold})
    await ok(till, {"type": "sale", "op": f"b-{m}", "member": m, "total": 10_000})  # +100
    half = await ok(
        till,
        {
            "type": "return",
            "op": unique("r"),
            "member": m,
            "sale": f"b-{m}",
            "amount": 5_000,
            "redemption": pay,
        },
    )
    assert (half.clawback, half.restored, half.applied) == (50, 100, 50)
    rest = await ok(
        till,
        {"type": "return", "op": unique("r"), "member": m, "sale": f"b-{m}", "redemption": pay},
    )
    assert (rest.clawback, rest.restored, rest.applied) == (50, 100, 50)
    assert rest.balance.posted == 500 - 200 + 100 - 100 + 200
    bogus = await err(
        till,
        {"type": "return", "op": unique("r"), "member": m, "sale": f"a-{m}", "redemption": hold},
    )
    assert bogus.code == "operation_not_found"


async def test_return_scope(clients, merchant):
    till = await clients.pos(merchant)
    a = (await enrol(till, phone=phone())).member
    b = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": f"s-{a}", "member": a, "total": 1_000})
    wrong = await err(till, {"type": "return", "op": unique("r"), "member": b, "sale": f"s-{a}"})
    assert wrong.code == "sale_not_found"
    app = await clients.app(merchant, a)
    refused = await err(app, {"type": "return", "op": unique("r"), "member": a, "sale": f"s-{a}"})
    assert refused.code == "forbidden"
