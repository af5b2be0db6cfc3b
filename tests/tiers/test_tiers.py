"""Slice 4: tiers on qualifying points over a rolling window; upgrade pushed live at once,
downgrade only at the evaluation date; tier multiplier and tier-only rewards."""

from __future__ import annotations

from protocol.loyalty import TierChanged
from tests.loyalty_support import admin, err, member_with_points, next_push, ok, setup_db


async def tiers(pg_dsn: str, merchant: str) -> None:
    await setup_db(
        pg_dsn,
        """INSERT INTO tiers (merchant_id, id, name, threshold, multiplier) VALUES
           ($1, 'silver', 'Silver', 100, 1), ($1, 'gold', 'Gold', 500, 2)""",
        merchant,
    )


async def test_upgrade_pushed_live_to_every_session_then_multiplier_applies(
    clients, merchant, pg_dsn
):
    await tiers(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 5_000)  # 50 points: no tier yet
    app = await clients.app(merchant, m)
    await ok(app, {"type": "subscribe", "member": m})
    cashier = await clients.pos(merchant, terminal="t9")
    view = await ok(cashier, {"type": "cashier_view", "member": m})
    assert view.tier.tier == "" and view.tier.next == "silver" and view.tier.to_next == 50
    await ok(till, {"type": "sale", "op": f"up-{m}", "member": m, "total": 50_000})  # +500
    for session in (app, cashier):
        push = await next_push(session, TierChanged)
        assert (push.member, push.tier, push.previous, push.direction) == (m, "gold", "", "up")
    receipt = await ok(till, {"type": "sale", "op": f"x2-{m}", "member": m, "total": 1_000})
    assert receipt.points == 20
    assert {b.rule: b.points for b in receipt.breakdown} == {"base": 10, "tier:gold": 10}
    found = await ok(
        till,
        {
            "type": "lookup",
            "phone": (await ok(till, {"type": "cashier_view", "member": m})).member.phone,
        },
    )
    assert found.tier == "gold"


async def test_downgrade_only_at_evaluation(clients, merchant, pg_dsn, http, rn):
    from tests.loyalty_support import ADMIN

    await tiers(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 60_000)  # 600 -> gold
    await ok(till, {"type": "return", "op": f"ret-{m}", "member": m, "sale": f"seed-{m}"})
    # qualifying points fell to 0, but the tier holds until the evaluation date
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert view.member.tier == "gold" and view.tier.qualifying == 0
    url = f"{rn.url}/admin/v1/merchants/{merchant}/tiers/evaluate"
    async with http.post(url, json={}, headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["down"] >= 1
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert view.member.tier == ""


async def test_rolling_window_at_evaluation(clients, merchant, pg_dsn, http, rn):
    from tests.loyalty_support import ADMIN

    await tiers(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 20_000)  # 200 -> silver
    assert (await ok(till, {"type": "cashier_view", "member": m})).member.tier == "silver"
    # 400 days on (an evaluation as of a future day is refused: it would drop tiers early)
    await setup_db(
        pg_dsn,
        "UPDATE sales SET created_at = created_at - interval '400 days' WHERE member_id = $1",
        m,
    )
    url = f"{rn.url}/admin/v1/merchants/{merchant}/tiers/evaluate"
    async with http.post(url, json={}, headers=ADMIN) as resp:
        assert resp.status == 200
    assert (await ok(till, {"type": "cashier_view", "member": m})).member.tier == ""


async def test_tier_only_reward(clients, merchant, pg_dsn):
    await tiers(pg_dsn, merchant)
    await setup_db(
        pg_dsn,
        """INSERT INTO rewards (merchant_id, id, name, cost, kind, value, min_tier)
           VALUES ($1, 'lounge', 'Gold lounge', 10, 'free_item', 0, 'gold')""",
        merchant,
    )
    await setup_db(pg_dsn, "UPDATE rewards SET sku = 'lounge' WHERE merchant_id = $1", merchant)
    till = await clients.pos(merchant)
    silver = await member_with_points(till, 20_000)
    refused = await err(
        till, {"type": "redeem_reward", "op": f"l-{silver}", "member": silver, "reward": "lounge"}
    )
    assert refused.code == "reward_not_eligible"
    gold = await member_with_points(till, 60_000)
    code = await ok(
        till, {"type": "redeem_reward", "op": f"l-{gold}", "member": gold, "reward": "lounge"}
    )
    assert code.status == "issued" and code.balance.available == 590


async def test_concurrent_upgrades_end_at_the_highest_tier_earned(
    clients, merchant, pg_dsn, rn, monkeypatch
):
    """Found in review: two sales at once, one lifting the member to silver and one to gold.
    The gold upgrade read the old tier, lost its conditional update to the silver one, and
    nobody tried again: the member stayed silver with gold's points."""
    import asyncio

    from gateway.tiers import standing

    await tiers(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 60_000)  # 600 points: gold is earned
    await setup_db(pg_dsn, "UPDATE member_profiles SET tier = '' WHERE member_id = $1", m)
    svc = rn.node.tiers
    real = standing.qualifying_points
    b_has_read, a_has_set = asyncio.Event(), asyncio.Event()
    calls = 0

    async def racing(conn, member, since):  # A sees 150 (its own sale), B sees 600
        nonlocal calls
        calls += 1
        if calls == 1:
            await b_has_read.wait()
            return 150
        if calls == 2:
            points = await real(conn, member, since)
            b_has_read.set()
            await a_has_set.wait()
            return points
        return await real(conn, member, since)

    real_set = svc._set

    async def set_then_signal(*args):
        done = await real_set(*args)
        a_has_set.set()
        return done

    monkeypatch.setattr(standing, "qualifying_points", racing)
    monkeypatch.setattr(svc, "_set", set_then_signal)
    app = await clients.app(merchant, m)
    await ok(app, {"type": "subscribe", "member": m})
    await asyncio.gather(svc.check_upgrade(merchant, m), svc.check_upgrade(merchant, m))
    monkeypatch.undo()
    assert (await ok(till, {"type": "cashier_view", "member": m})).member.tier == "gold"
    pushes = [await next_push(app, TierChanged), await next_push(app, TierChanged)]
    assert [(p.previous, p.tier) for p in pushes] == [("", "silver"), ("silver", "gold")]


async def test_returns_leave_the_window_with_their_sale(clients, merchant, pg_dsn, http, rn):
    """Found in review: a return counted by its own date, so the return (300 days ago) of a
    sale made 400 days ago still cut the points of the window, which no longer held the sale."""
    from tests.loyalty_support import ADMIN

    await tiers(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 20_000)  # the old sale: 200
    await ok(till, {"type": "return", "op": f"ret-{m}", "member": m, "sale": f"seed-{m}"})
    await setup_db(
        pg_dsn,
        """UPDATE sales SET created_at = now() - interval '400 days' WHERE member_id = $1;""",
        m,
    )
    await setup_db(
        pg_dsn,
        "UPDATE sale_returns SET created_at = now() - interval '300 days' WHERE member_id = $1",
        m,
    )
    await ok(till, {"type": "sale", "op": f"new-{m}", "member": m, "total": 60_000})  # 600
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert view.tier.qualifying == 600 and view.member.tier == "gold"
    url = f"{rn.url}/admin/v1/merchants/{merchant}/tiers/evaluate"
    async with http.post(url, json={}, headers=ADMIN) as resp:
        assert resp.status == 200
    assert (await ok(till, {"type": "cashier_view", "member": m})).member.tier == "gold"


async def test_a_reserve_pipelined_behind_a_sale_runs_after_it(clients, merchant, pg_dsn):
    """Found in review: a sale reads the member's tier before it reaches the ledger, and a
    reserve pipelined behind it (both sent before either reply) went first: refused for the
    points the sale was about to post, and the refusal then replayed on every retry."""
    import asyncio

    await tiers(pg_dsn, merchant)
    till = await clients.pos(merchant)
    for i in range(3):
        m = await member_with_points(till, 0)
        sale = {"type": "sale", "op": f"s{i}-{m}", "member": m, "total": 50_000}  # +500
        reserve = {"type": "reserve", "op": f"h{i}-{m}", "member": m, "points": 500}
        sold = asyncio.ensure_future(ok(till, sale))
        held = asyncio.ensure_future(till.request(reserve))
        await sold
        reply = await held
        assert getattr(reply, "code", None) is None, (i, reply)
        assert reply.data.status == "active"


async def test_tier_evaluation_never_drops_a_tier_before_its_window_ends(
    clients, merchant, pg_dsn, http, rn
):
    """Found in review: an ``at`` up to 60 s ahead of the node's clock (the skew allowed) was
    used as is, so a tier whose window ends in 20 s dropped at once. It is read as the
    database's clock."""
    from datetime import UTC, datetime, timedelta

    await setup_db(
        pg_dsn,
        """INSERT INTO tiers (merchant_id, id, name, threshold, multiplier)
           VALUES ($1, 'silver', 'Silver', 100, 1)""",
        merchant,
    )
    till = await clients.pos(merchant)
    m = await member_with_points(till, 20_000)  # 200 points: silver
    assert (await ok(till, {"type": "cashier_view", "member": m})).member.tier == "silver"
    await setup_db(
        pg_dsn,
        "UPDATE sales SET created_at = now() - interval '365 days' + interval '20 seconds'"
        " WHERE member_id = $1",
        m,
    )
    ahead = (datetime.now(UTC) + timedelta(seconds=50)).isoformat()
    url = f"{rn.url}/admin/v1/merchants/{merchant}/tiers/evaluate"
    status, body = await admin(http, "POST", url, json={"at": ahead})
    assert (status, body["down"]) == (200, 0), body
    assert (await ok(till, {"type": "cashier_view", "member": m})).member.tier == "silver"
