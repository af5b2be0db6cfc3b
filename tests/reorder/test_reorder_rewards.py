"""The reward on reorder: a purchase of the product within the attribution window after a
reminder's message was sent earns the promised bonus through the ledger, exactly once (a
retried sale, a second purchase from another channel, two nodes' passes at once), in the
breakdown and pushed live; a coupon incentive grants a code; no reward for the control group,
a reorder before any message, or one after the window."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.reorder import reward_op
from protocol.messages import BalanceChanged
from tests.conftest import REDIS_URL
from tests.loyalty_support import add_reward, next_push, ok, setup_db
from tests.reorder.support import fetch, product
from tests.reorder.test_outbox import put_loop, shopper
from tests.support import running_node, settings_for

NOW = datetime.now(UTC).replace(microsecond=0)


async def sale(client: Any, op: str, member: str, sku: str = "beans", qty: int = 1) -> Any:
    return await ok(
        client,
        {
            "type": "sale",
            "op": op,
            "member": member,
            "total": 1000 * qty,
            "lines": [{"sku": sku, "qty": qty, "price": 1000}],
        },
    )


async def reminder_of(pg_dsn: str, member: str) -> dict[str, Any]:
    (r,) = await fetch(
        pg_dsn,
        "SELECT id, state, reordered_at, reward_state FROM reorder_reminders WHERE member_id = $1",
        member,
    )
    return dict(r)


async def reorder_entries(pg_dsn: str, member: str) -> list[tuple[str, int]]:
    rows = await fetch(
        pg_dsn,
        """SELECT op_id, posted_delta FROM ledger_entries
            WHERE member_id = $1 AND op_id LIKE '~reorder/%' ORDER BY version""",
        member,
    )
    return [(r["op_id"], r["posted_delta"]) for r in rows]


async def test_the_bonus_is_earned_once_in_the_breakdown_and_pushed(
    http, rn, clients, merchant, pg_dsn, smtp, redis_prefix
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    web = await clients.pos(merchant, channel="web")
    m, _, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant, incentive={"kind": "points", "points": 200})
    assert (await rn.node.reorder.run(NOW)).outbox.sent == 1
    app = await clients.app(merchant, m)
    await ok(app, {"type": "subscribe", "member": m})
    # the reorder on the web shop, the same sale retried, and another at the till
    await sale(web, f"{merchant}-re", m)
    await sale(web, f"{merchant}-re", m)
    await sale(till, f"{merchant}-re2", m)
    # two nodes' passes at once
    s = settings_for(pg_dsn, REDIS_URL, "r2")
    s = replace(s, server=replace(s.server, reorder_seconds=0.0))
    async with running_node(s, redis_prefix) as other:
        await rn.node.reorder.predictor.run()
        passes = await asyncio.gather(
            rn.node.reorder.rewarder.run(merchant),
            other.node.reorder.rewarder.run(merchant),
            rn.node.reorder.rewarder.run(merchant),
        )
    assert sum(p.granted for p in passes) >= 1
    r = await reminder_of(pg_dsn, m)
    assert (r["state"], r["reward_state"]) == ("done", "granted")
    assert await reorder_entries(pg_dsn, m) == [(reward_op(r["id"]), 200)]
    rows = await fetch(
        pg_dsn, "SELECT grant_kind, points, op_id FROM reorder_rewards WHERE member_id = $1", m
    )
    assert [tuple(x) for x in rows] == [("points", 200, reward_op(r["id"]))]
    (op,) = await fetch(
        pg_dsn,
        "SELECT result FROM operations WHERE merchant_id = $1 AND op_id = $2",
        merchant,
        reward_op(r["id"]),
    )
    assert b"reorder:l1" in op["result"]  # the breakdown line
    while True:
        push = await next_push(app, BalanceChanged)
        if push.cause.op == reward_op(r["id"]):
            break
    assert push.cause.kind == "earn"
    balance = await ok(app, {"type": "balance", "member": m})
    assert balance.posted == push.posted  # the three sales' points and the 200
    # nothing more, however many passes
    for _ in range(2):
        assert (await rn.node.reorder.run(NOW + timedelta(hours=1))).rewards.granted == 0
    assert len(await reorder_entries(pg_dsn, m)) == 1


async def test_no_reward_for_control_early_or_late_reorders(http, rn, clients, merchant, pg_dsn):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    early, _, _ = await shopper(till, pg_dsn, merchant, days_ago=26)  # due tomorrow
    late, _, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(
        http, rn, merchant, incentive={"kind": "points", "points": 50, "attribution_days": 3}
    )
    done = await rn.node.reorder.run(NOW)
    assert done.outbox.sent == 1  # late's; early's reminder is not due yet
    await sale(till, f"{merchant}-early", early)  # before any message: cancelled
    # late's message went 5 days ago: outside the 3-day window
    await setup_db(
        pg_dsn,
        "UPDATE reorder_messages SET sent_at = sent_at - interval '5 days' WHERE member_id = $1",
        late,
    )
    await sale(till, f"{merchant}-late", late)
    await rn.node.reorder.run(NOW)
    assert (await reminder_of(pg_dsn, early))["state"] == "cancelled"
    for m in (early, late):
        assert (await reminder_of(pg_dsn, m))["reward_state"] == "none"
        assert await reorder_entries(pg_dsn, m) == []


async def test_the_control_group_reorders_without_a_reward(http, rn, clients, merchant, pg_dsn):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    m, _, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant, control_share=0.5)
    await rn.node.reorder.predictor.run()
    await rn.node.reorder.scheduler.run(NOW, merchant)
    await setup_db(pg_dsn, "UPDATE reorder_reminders SET control = true WHERE member_id = $1", m)
    done = await rn.node.reorder.run(NOW)
    assert (done.dispatch.control, done.outbox.sent) == (1, 0)
    await sale(till, f"{merchant}-c", m)
    await rn.node.reorder.run(NOW)
    r = await reminder_of(pg_dsn, m)
    assert r["reordered_at"] is not None and r["reward_state"] == "none"
    assert await reorder_entries(pg_dsn, m) == []


async def test_a_coupon_incentive_grants_a_code_once(http, rn, clients, merchant, pg_dsn):
    await product(pg_dsn, merchant, "beans", 30)
    await add_reward(pg_dsn, merchant, "free-mug", 500, 800, name="A free mug")
    till = await clients.pos(merchant)
    m, _, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant, incentive={"kind": "reward", "reward": "free-mug"})
    assert (await rn.node.reorder.run(NOW)).outbox.sent == 1
    await sale(till, f"{merchant}-r", m)
    assert (await rn.node.reorder.run(NOW)).rewards.granted == 1
    assert (await rn.node.reorder.run(NOW)).rewards.granted == 0
    r = await reminder_of(pg_dsn, m)
    codes = await fetch(
        pg_dsn,
        "SELECT reward_id, points FROM reward_codes WHERE member_id = $1 AND issue_op = $2",
        m,
        reward_op(r["id"]),
    )
    assert [tuple(c) for c in codes] == [("free-mug", 0)]
    rows = await fetch(
        pg_dsn, "SELECT grant_kind, reward_id, code FROM reorder_rewards WHERE member_id = $1", m
    )
    assert rows[0]["grant_kind"] == "reward" and rows[0]["code"]
