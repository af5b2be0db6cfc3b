"""Slice 8: level-2 cashier view in one request, then live changes pushed to the register."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocol.messages import BalanceChanged
from tests.conftest import unique
from tests.loyalty_support import (
    admin,
    enrol,
    err,
    member_with_points,
    next_push,
    ok,
    phone,
    setup_db,
)


async def test_cashier_view_then_live_changes(clients, merchant, pg_dsn):
    await setup_db(
        pg_dsn,
        """INSERT INTO tiers (merchant_id, id, name, threshold, multiplier) VALUES
             ($1, 'silver', 'Silver', 100, 1), ($1, 'gold', 'Gold', 1000, 2);
           INSERT INTO rewards (merchant_id, id, name, cost, kind, value) VALUES
             ($1, 'five', '$5 off', 100, 'amount_off', 500),
             ($1, 'fifty', '$50 off', 5000, 'amount_off', 5000);""".replace("$1", f"'{merchant}'"),
    )
    await setup_db(
        pg_dsn,
        """INSERT INTO earning_rules (merchant_id, id, kind, name, bonus, ends_at)
           VALUES ($1, 'today', 'promotion', 'Bonus today', 100, $2)""",
        merchant,
        datetime.now(UTC) + timedelta(hours=2),
    )
    till = await clients.pos(merchant)
    m = await member_with_points(till, 30_000)  # 300 + 100 bonus
    code = await ok(
        till, {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "five"}
    )
    register = await clients.pos(merchant, terminal="t2")
    view = await ok(register, {"type": "cashier_view", "member": m, "replace": True})
    assert view.member.member == m and view.member.phone.startswith("+1")
    assert (view.balance.posted, view.balance.held, view.balance.available) == (300, 0, 300)
    assert (view.tier.tier, view.tier.qualifying, view.tier.next, view.tier.to_next) == (
        "silver",
        400,
        "gold",
        600,
    )
    assert {(r.reward, r.affordable) for r in view.rewards} == {("five", True), ("fifty", False)}
    assert [c.code for c in view.codes] == [code.code]
    assert [p.op for p in view.recent] == [f"seed-{m}"]
    assert [o.offer for o in view.offers] == ["today"]
    # the register now receives every change of the member, from any register
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000})
    push = await next_push(register, BalanceChanged)
    assert push.member == m and push.version == view.balance.version + 1
    assert push.posted == 300 + 10 + 100


async def test_cashier_view_is_pos_only_and_merchant_scoped(clients, merchant):
    till = await clients.pos(merchant)
    m = await member_with_points(till, 1_000)
    app = await clients.app(merchant, m)
    assert (await err(app, {"type": "cashier_view", "member": m})).code == "forbidden"
    assert (await err(till, {"type": "cashier_view", "member": "ghost"})).code == (
        "member_not_found"
    )


async def test_a_ten_times_offer_reads_10_and_its_rule_can_be_put_back(clients, http, rn, merchant):
    """Found in review: multipliers and rates of 10, 20, 100... were written "1E+1" (``str`` of
    a normalised Decimal) in the cashier view's offers and the admin API, and a rule read back
    from GET was refused by PUT."""
    base = f"{rn.url}/admin/v1/merchants/{merchant}"
    status, rule = await admin(
        http, "PUT", f"{base}/rules/ten-x", json={"kind": "promotion", "multiplier": "10"}
    )
    assert status == 200, rule
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert [(o.offer, o.multiplier) for o in view.offers] == [("ten-x", "10")]
    _, listed = await admin(http, "GET", f"{base}/rules")
    body = {k: v for k, v in listed["rules"][0].items() if k != "id" and v is not None}
    assert body["multiplier"] == "10"
    assert (await admin(http, "PUT", f"{base}/rules/ten-x", json=body))[0] == 200
