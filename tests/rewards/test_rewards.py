"""Slice 5: reward catalogue, points turned into single-use codes (ledger `reward` entry,
refused without enough points), redeemed exactly once at any register, expiry, void."""

from __future__ import annotations

import asyncio

from protocol.messages import Error, Result
from tests.conftest import unique
from tests.loyalty_support import err, member_with_points, ok, setup_db


async def catalogue(pg_dsn: str, merchant: str) -> None:
    await setup_db(
        pg_dsn,
        """INSERT INTO rewards (merchant_id, id, name, cost, kind, value, sku) VALUES
           ($1, 'ten-off', '$10 off', 500, 'amount_off', 1000, NULL),
           ($1, 'coffee', 'Free coffee', 150, 'free_item', 0, 'latte')""",
        merchant,
    )


def redeem(member: str, reward: str = "ten-off", op: str | None = None) -> dict:
    return {
        "type": "redeem_reward",
        "op": op or unique("rr"),
        "member": member,
        "reward": reward,
    }


async def test_redeem_turns_points_into_a_code(clients, merchant, pg_dsn):
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 60_000)  # 600
    frame = redeem(m)
    code = await ok(till, frame)
    assert code.code.startswith("RW-") and code.status == "issued"
    assert (code.points, code.reward_kind, code.value) == (500, "amount_off", 1000)
    assert code.balance.available == 100
    assert await ok(till, frame) == code  # retry: same code, spent once
    refused = await err(till, redeem(m))
    assert refused.code == "insufficient_points"
    assert (await err(till, redeem(m, "nope"))).code == "reward_not_found"
    history = await ok(till, {"type": "outcome", "op": frame["op"]})
    # the redemption's own reply: its code, which cost 500 points (it answered a sale-shaped
    # receipt of -500 points before `outcome` answered each command's own shape)
    assert history.ok and history.data.code == code.code and history.data.points == 500


async def test_app_member_redeems_own_points(clients, merchant, pg_dsn):
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 20_000)
    other = await member_with_points(till, 20_000)
    app = await clients.app(merchant, m)
    code = await ok(app, redeem(m, "coffee"))
    assert code.sku == "latte" and code.balance.available == 50
    assert (await err(app, redeem(other, "coffee"))).code == "forbidden"
    assert (await err(app, {"type": "use_code", "op": "u1", "code": code.code})).code == (
        "forbidden"
    )


async def test_an_apps_op_ids_cannot_take_a_registers(clients, merchant, pg_dsn):
    """Found in review: an app's redeem_reward used the merchant's op id space, so an app could
    take a register's next receipt number first (the sale then got idempotency_conflict) and
    probe which ids exist. An app's ids now live in a space of its member's."""
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 20_000)
    app = await clients.app(merchant, m)
    receipt = unique("rcpt")
    code = await ok(app, redeem(m, "coffee", op=receipt))
    assert await ok(app, redeem(m, "coffee", op=receipt)) == code  # its retry replays
    sold = await ok(till, {"type": "sale", "op": receipt, "member": m, "total": 1_000})
    assert sold.points == 10  # the register's id was still free
    mine = await ok(app, {"type": "outcome", "op": receipt})
    assert mine.op == receipt and mine.data == code  # the app's own: its code (150 points)
    assert mine.data.points == 150
    theirs = await ok(till, {"type": "outcome", "op": receipt})
    assert theirs.data.points == 10  # the register's
    probe = unique("never")
    assert (await err(app, {"type": "outcome", "op": probe})).code == "operation_not_found"


async def test_code_redeemed_exactly_once_by_two_registers_at_once(clients, merchant, pg_dsn):
    await catalogue(pg_dsn, merchant)
    t1 = await clients.pos(merchant, store="s1", terminal="a")
    t2 = await clients.pos(merchant, store="s2", terminal="b")
    web = await clients.pos(merchant, store="web", terminal="shop", channel="web")
    m = await member_with_points(t1, 60_000)
    code = (await ok(t1, redeem(m))).code
    for _ in range(3):  # and again, with a fresh code, to exercise the race repeatedly
        ops = [unique("use"), unique("use")]
        replies = await asyncio.gather(
            t1.request({"type": "use_code", "op": ops[0], "code": code}),
            t2.request({"type": "use_code", "op": ops[1], "code": code.lower()}),
        )
        won = [r for r in replies if isinstance(r, Result)]
        lost = [r for r in replies if isinstance(r, Error)]
        assert len(won) == 1 and len(lost) == 1, replies
        assert lost[0].code == "code_already_redeemed"
        winner = 0 if isinstance(replies[0], Result) else 1
        again = await (t1, t2)[winner].request(
            {"type": "use_code", "op": ops[winner], "code": code}
        )
        assert isinstance(again, Result) and again.data.status == "redeemed"
        assert (await err(web, {"type": "use_code", "op": unique("u"), "code": code})).code == (
            "code_already_redeemed"
        )
        await ok(t1, {"type": "sale", "op": unique("s"), "member": m, "total": 50_000})
        code = (await ok(t1, redeem(m))).code


async def test_void_returns_points_and_blocks_use(clients, merchant, pg_dsn):
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 60_000)
    code = (await ok(till, redeem(m))).code
    op = unique("void")
    voided = await ok(till, {"type": "void_code", "op": op, "code": code})
    assert voided.status == "voided" and voided.balance.available == 600
    again = await ok(till, {"type": "void_code", "op": op, "code": code})
    assert again.balance == voided.balance  # retry: refunded once
    use = await err(till, {"type": "use_code", "op": unique("u"), "code": code})
    assert use.code == "code_voided"
    assert (await err(till, {"type": "void_code", "op": unique("v"), "code": code})).code == (
        "code_voided"
    )
    used = (await ok(till, redeem(m))).code
    await ok(till, {"type": "use_code", "op": unique("u"), "code": used})
    refused = await err(till, {"type": "void_code", "op": unique("v"), "code": used})
    assert refused.code == "code_already_redeemed"


async def test_expired_code_refused_but_voidable(clients, merchant, pg_dsn):
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 60_000)
    code = (await ok(till, redeem(m))).code
    await setup_db(
        pg_dsn,
        "UPDATE reward_codes SET expires_at = now() - interval '1 minute' WHERE code = $1",
        code,
    )
    assert (await err(till, {"type": "use_code", "op": unique("u"), "code": code})).code == (
        "code_expired"
    )
    back = await ok(till, {"type": "void_code", "op": unique("v"), "code": code})
    assert back.balance.available == 600


async def test_codes_are_merchant_scoped(clients, merchant, pg_dsn):
    from gateway.programme import create_merchant

    await catalogue(pg_dsn, merchant)
    other = unique("mer")
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    await create_merchant(conn, other)
    await conn.close()
    till = await clients.pos(merchant)
    foreign = await clients.pos(other)
    m = await member_with_points(till, 60_000)
    code = (await ok(till, redeem(m))).code
    for kind in ("use_code", "void_code"):
        reply = await err(foreign, {"type": kind, "op": unique("x"), "code": code})
        assert reply.code == "code_not_found"
    assert (await err(foreign, redeem(m))).code == "member_not_found"
    await ok(till, {"type": "use_code", "op": unique("u"), "code": code})


async def test_void_under_an_id_already_used_leaves_the_code_usable(clients, merchant, pg_dsn):
    """Found in review: the code was marked voided before the ledger refused the reused id, so
    the code was lost and its points never came back."""
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 110_000)  # 1,100
    first = (await ok(till, redeem(m))).code
    second = (await ok(till, redeem(m))).code
    op = unique("void")
    await ok(till, {"type": "void_code", "op": op, "code": first})
    reused = await err(till, {"type": "void_code", "op": op, "code": second})
    assert reused.code == "idempotency_conflict"
    back = await ok(till, {"type": "void_code", "op": unique("v"), "code": second})
    assert back.status == "voided" and back.balance.available == 1_100


async def test_redemption_retry_replays_at_the_cost_it_paid(clients, merchant, pg_dsn):
    """Found in review: a retry re-read the catalogue, so after a price change it was refused
    as an idempotency conflict, and a code lost between the ledger and its insert (a node
    dying there) could never be issued for points already taken."""
    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 80_000)  # 800
    frame = redeem(m)
    code = await ok(till, frame)
    await setup_db(
        pg_dsn, "UPDATE rewards SET cost = 550 WHERE merchant_id = $1 AND id = 'ten-off'", merchant
    )
    assert await ok(till, frame) == code
    coffee = redeem(m, "coffee")
    await ok(till, coffee)
    await setup_db(  # as if the node died after the ledger, before the code's insert ...
        pg_dsn,
        "DELETE FROM reward_codes WHERE merchant_id = $1 AND issue_op = $2",
        merchant,
        coffee["op"],
    )
    await setup_db(  # ... and the reward was then repriced and withdrawn
        pg_dsn,
        "UPDATE rewards SET cost = 999, active = false WHERE merchant_id = $1 AND id = 'coffee'",
        merchant,
    )
    again = await ok(till, coffee)
    assert again.status == "issued" and again.points == 150
    assert again.balance.available == 800 - 500 - 150  # spent once
    assert (await err(till, redeem(m, "coffee"))).code == "reward_not_found"  # a new one is not


async def test_a_reward_for_an_undefined_tier_is_open_to_no_one(clients, merchant, pg_dsn):
    """A reward kept for a tier the programme does not define (a typo, a tier since dropped)
    was redeemable by, and offered to, members of no tier at all (found in review)."""
    await setup_db(
        pg_dsn,
        """INSERT INTO tiers (merchant_id, id, name, threshold) VALUES
           ($1, 'silver', 'Silver', 1000), ($1, 'gold', 'Gold', 5000)""",
        merchant,
    )
    await setup_db(
        pg_dsn,
        """INSERT INTO rewards (merchant_id, id, name, cost, kind, value, min_tier)
           VALUES ($1, 'vip', 'VIP', 10, 'amount_off', 5000, 'platinum')""",
        merchant,
    )
    till = await clients.pos(merchant)
    m = await member_with_points(till, 10_000)  # 100 points, no tier
    reply = await till.request(redeem(m, "vip"))
    assert getattr(reply, "code", None) == "reward_not_eligible", reply
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert "vip" not in [r.reward for r in view.rewards]


async def test_a_use_code_op_names_one_code(clients, merchant, pg_dsn):
    """The same op on a second code redeemed it too, where a changed retry must be refused;
    so did an op the ledger holds for a sale (found in review)."""
    import asyncio

    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 160_000)
    first, second, third = [(await ok(till, redeem(m))).code for _ in range(3)]
    op = unique("use")
    await ok(till, {"type": "use_code", "op": op, "code": first})
    changed = await err(till, {"type": "use_code", "op": op, "code": second})
    assert changed.code == "idempotency_conflict"
    assert (await ok(till, {"type": "use_code", "op": op, "code": first})).status == "redeemed"
    sold = unique("s")
    await ok(till, {"type": "sale", "op": sold, "member": m, "total": 100})
    assert (await err(till, {"type": "use_code", "op": sold, "code": second})).code == (
        "idempotency_conflict"
    )
    # Two codes under one new op at the same instant: exactly one is redeemed.
    both = unique("use")
    replies = await asyncio.gather(
        till.request({"type": "use_code", "op": both, "code": second}),
        till.request({"type": "use_code", "op": both, "code": third}),
    )
    assert sorted(type(r).__name__ for r in replies) == ["Error", "Result"], replies
    assert [r.code for r in replies if isinstance(r, Error)] == ["idempotency_conflict"]


async def test_a_redemption_retried_after_a_merge_replays_its_code(
    clients, merchant, pg_dsn, http, rn
):
    """An applied redemption retried after its member was merged was refused naming either
    member (idempotency_conflict): the points were taken and the register never got the
    code (found in review)."""
    from tests.members.test_member_merge import merge

    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    dup = await member_with_points(till, 60_000)
    survivor = await member_with_points(till, 10_000)
    frame = redeem(dup)
    code = await ok(till, frame)
    status, _ = await merge(http, rn.url, merchant, survivor, {"source": dup, "op": unique("m")})
    assert status == 200
    again = await ok(till, frame)
    assert again.code == code.code and again.member == survivor
    assert (await ok(till, {**frame, "member": survivor})).code == code.code
    assert (await ok(till, {"type": "balance", "member": survivor})).posted == 700 - 500
    other = await member_with_points(till, 60_000)
    assert (await err(till, {**frame, "member": other})).code == "idempotency_conflict"


async def test_an_issued_code_keeps_the_rewards_terms_as_issued(
    clients, merchant, pg_dsn, http, rn
):
    """Found in review: a code's terms were read from the catalogue each time, so editing a
    reward (a $10-off made 100% off, a free latte made a free something else) changed what
    codes already paid for were worth at the till, in the cashier view and in the export."""
    from tests.loyalty_support import admin

    await catalogue(pg_dsn, merchant)
    till = await clients.pos(merchant)
    m = await member_with_points(till, 120_000)  # 1,200
    ten, coffee = redeem(m), redeem(m, "coffee")
    issued = [await ok(till, ten), await ok(till, coffee)]
    base = f"{rn.url}/admin/v1/merchants/{merchant}/rewards"
    edits = {
        "ten-off": {"name": "All free", "cost": 500, "kind": "percent_off", "value": 100},
        "coffee": {"name": "Free cake", "cost": 150, "kind": "free_item", "sku": "cake"},
    }
    for reward, body in edits.items():
        assert (await admin(http, "PUT", f"{base}/{reward}", json=body))[0] == 200

    def terms(c):
        return (c.name, c.reward_kind, c.value, c.sku)

    def terms_of(c):  # an exported code: defaults left out
        return (c.get("name", ""), c.get("reward_kind", ""), c.get("value", 0), c.get("sku"))

    was = [("$10 off", "amount_off", 1_000, None), ("Free coffee", "free_item", 0, "latte")]
    assert [terms(c) for c in issued] == was
    assert [terms(await ok(till, f)) for f in (ten, coffee)] == was  # retries replay them
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert sorted(terms(c) for c in view.codes) == sorted(was)
    url = f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}/export"
    status, export = await admin(http, "GET", url)
    assert status == 200 and sorted(terms_of(c) for c in export["codes"]) == sorted(was)
    used = await ok(till, {"type": "use_code", "op": unique("u"), "code": issued[0].code})
    assert terms(used) == was[0]
    voided = await ok(till, {"type": "void_code", "op": unique("v"), "code": issued[1].code})
    assert terms(voided) == was[1] and voided.points == 150
    # A code redeemed after the edit has the new terms.
    fresh = await ok(till, redeem(m))
    assert terms(fresh) == ("All free", "percent_off", 100, None)
