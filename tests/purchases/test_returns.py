"""Slice 6: full and partial returns against the original sale reverse earned points in
proportion and restore spent points; the clawback is capped at what is available and the
uncollected remainder is reported."""

from __future__ import annotations

import asyncio

import asyncpg

from gateway.errors import StoreUnavailable
from protocol.messages import Error, Result
from tests.conftest import unique
from tests.loyalty_support import add_reward, enrol, err, ok, phone, setup_db

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
    await add_reward(pg_dsn, merchant, "r80", 80, 500)
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


async def test_the_uncollected_clawback_is_owed_so_a_void_cannot_bring_it_back(
    clients, merchant, pg_dsn
):
    """Found in review: the 80 points a return could not take back (spent on a code) were
    forgotten, so voiding the code refunded them: the shopper kept 80 points of a sale that was
    returned in full. They are owed now, and the refund pays them back first."""
    await add_reward(pg_dsn, merchant, "r80", 80, 500)
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": f"s-{m}", "member": m, "total": 10_000})
    code = await ok(till, {"type": "redeem_reward", "op": f"rw-{m}", "member": m, "reward": "r80"})
    back = await ok(till, {"type": "return", "op": f"r-{m}", "member": m, "sale": f"s-{m}"})
    assert back.uncollected == 80
    voided = await ok(till, {"type": "void_code", "op": unique("v"), "code": code.code})
    assert voided.balance.available == 0 and voided.balance.posted == 0
    later = await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 5_000})
    assert later.balance.available == 50  # the debt was paid: new points count again


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


async def _paid_with_points(till, m: str, points: int) -> str:
    hold, pay = unique("h"), unique("c")
    await ok(till, {"type": "reserve", "op": hold, "member": m, "points": points})
    await ok(till, {"type": "commit", "op": pay, "member": m, "hold": hold})
    return pay


async def test_a_redemption_is_restored_through_one_sale_only(clients, merchant):
    """Found in review: each return capped the restore by the *same sale's* earlier returns, so
    one 1,000-point payment cited by three small sales' returns gave back 3,000."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 100_000})  # 1,000
    pay = await _paid_with_points(till, m, 1_000)
    small = [unique("s") for _ in range(3)]
    for s in small:
        await ok(till, {"type": "sale", "op": s, "member": m, "total": 100})  # 1 each
    first = await ok(
        till,
        {"type": "return", "op": unique("r"), "member": m, "sale": small[0], "redemption": pay},
    )
    assert (first.clawback, first.restored) == (1, 1_000)
    for s in small[1:]:
        other = await err(
            till,
            {"type": "return", "op": unique("r"), "member": m, "sale": s, "redemption": pay},
        )
        assert other.code == "redemption_of_another_sale" and small[0] in other.message
    # the same sales return fine without naming it, and nothing more comes back
    plain = await ok(till, {"type": "return", "op": unique("r"), "member": m, "sale": small[1]})
    assert (plain.clawback, plain.restored) == (1, 0)
    assert plain.balance.posted == 1_000 - 1_000 + 3 - 1 + 1_000 - 1


async def test_a_partial_return_restores_the_returned_lines_share_of_spent_points(
    clients, merchant
):
    """Found in review: a partial return restored spent points by its cash value, floored, over
    the sale's total, so returning one of two equal lines of a sale paid entirely with points
    (total 0) restored none of them, and of a sale with 1 cent left to pay restored none of
    999. It restores the returned lines' share of the sale's value, exactly."""
    till = await clients.pos(merchant)
    lines = [{"sku": "a", "qty": 1, "price": 5_000}, {"sku": "b", "qty": 1, "price": 5_000}]
    for spent, total, half in ((1_000, 0, 500), (999, 1, 499)):
        m = (await enrol(till, phone=phone())).member
        await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 100_000})
        pay = await _paid_with_points(till, m, spent)
        sale = unique("s")
        await ok(till, {"type": "sale", "op": sale, "member": m, "total": total, "lines": lines})
        frame = {"type": "return", "member": m, "sale": sale, "redemption": pay}
        one = await ok(till, {**frame, "op": unique("r"), "lines": [{"sku": "a", "qty": 1}]})
        assert (one.clawback, one.restored, one.applied) == (0, half, half), (total, one)
        rest = await ok(till, {**frame, "op": unique("r")})
        assert rest.restored == spent - half, (total, rest)
        assert rest.balance.posted == 1_000, (total, rest)


async def test_concurrent_returns_naming_one_redemption_restore_it_once(clients, merchant):
    tills = [await clients.pos(merchant, terminal=f"t{i}") for i in range(4)]
    m = (await enrol(tills[0], phone=phone())).member
    await ok(tills[0], {"type": "sale", "op": unique("s"), "member": m, "total": 100_000})
    pay = await _paid_with_points(tills[0], m, 600)
    sales_ = [unique("s") for _ in tills]
    for s in sales_:
        await ok(tills[0], {"type": "sale", "op": s, "member": m, "total": 1_000})  # 10 each
    replies = await asyncio.gather(
        *(
            t.request(
                {"type": "return", "op": unique("r"), "member": m, "sale": s, "redemption": pay}
            )
            for t, s in zip(tills, sales_, strict=True)
        )
    )
    won = [r.data for r in replies if isinstance(r, Result)]
    lost = [r for r in replies if isinstance(r, Error)]
    assert len(won) == 1 and won[0].restored == 600
    assert [e.code for e in lost] == ["redemption_of_another_sale"] * 3
    bal = await ok(tills[0], {"type": "balance", "member": m})
    assert bal.posted == 1_000 - 600 + 40 - 10 + 600


async def test_a_return_the_ledger_refuses_leaves_nothing_counted(clients, merchant, pg_dsn):
    """Found in review: the return's row was kept when the ledger refused its op (an id used
    before by another operation), so the sale counted as returned and no points came back."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = unique("s")
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 10_000})  # 100
    taken = unique("used")
    await ok(till, {"type": "sale", "op": taken, "member": m, "total": 100})  # the id, taken
    refused = await err(till, {"type": "return", "op": taken, "member": m, "sale": sale})
    assert refused.code == "idempotency_conflict"
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM sale_returns WHERE op_id = $1", taken) == 0
        # A row left by a node that died before deleting it does not count either.
        await conn.execute(
            """INSERT INTO sale_returns (merchant_id, op_id, sale_op, member_id, lines, value,
                                         clawback, restored, fingerprint)
               VALUES ($1, $2, $3, $4, '{}', 10000, 100, 0, '\\x00')""",
            merchant,
            taken,
            sale,
            m,
        )
    finally:
        await conn.close()
    back = await ok(till, {"type": "return", "op": unique("r"), "member": m, "sale": sale})
    assert (back.clawback, back.applied) == (100, -100)
    assert back.balance.posted == 1
    tier = await ok(till, {"type": "cashier_view", "member": m})
    assert tier is not None


async def test_partial_return_of_a_sale_with_zero_priced_lines(clients, merchant):
    """Found in review: a line return divided by the lines' value, 0 here (an internal error)."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = unique("s")
    free = [{"sku": "a", "qty": 3, "price": 0}, {"sku": "b", "qty": 1, "price": 0}]
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 4_000, "lines": free})
    one = [{"sku": "a", "qty": 1}]
    await ok(till, {"type": "return", "op": unique("r"), "member": m, "sale": sale, "lines": one})
    await ok(till, {"type": "return", "op": unique("r"), "member": m, "sale": sale})
    page = await ok(till, {"type": "history", "member": m})
    assert [ln.returned for ln in page.purchases[0].lines] == [3, 1]


async def test_a_line_return_is_valued_exactly(clients, merchant):
    """Found in review: one line of three returned from a sale of 300 was valued 99 (a
    28-digit third times 300), and the clawback followed."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = unique("s")
    lines = [{"sku": s, "qty": 1, "price": 100} for s in ("a", "b", "c")]
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 30_000, "lines": lines})
    one = [{"sku": "a", "qty": 1}]
    back = await ok(
        till, {"type": "return", "op": unique("r"), "member": m, "sale": sale, "lines": one}
    )
    assert back.clawback == 100  # a third of 300 points, exactly


async def test_a_return_and_an_outcome_pipelined_behind_their_sale_see_it(clients, merchant):
    """A return and an outcome query sent right behind their sale, before its reply, read the
    sale after it committed: the return read the sale first (sale_not_found) and the outcome
    answered operation_not_found."""
    till = await clients.pos(merchant)
    for i in range(3):
        m = (await enrol(till, phone=phone())).member
        sale = f"s{i}-{m}"
        sold = asyncio.ensure_future(
            ok(till, {"type": "sale", "op": sale, "member": m, "total": 1_200, "lines": LINES})
        )
        returned = asyncio.ensure_future(
            till.request({"type": "return", "op": f"r{i}-{m}", "member": m, "sale": sale})
        )
        asked = asyncio.ensure_future(till.request({"type": "outcome", "op": sale}))
        await sold
        reply = await returned
        assert not isinstance(reply, Error), (i, reply)
        assert reply.data.clawback == 12
        outcome = await asked
        assert not isinstance(outcome, Error), (i, outcome)  # was operation_not_found
        assert outcome.data.ok and outcome.data.data.op == sale


async def test_a_line_return_claws_back_what_those_lines_earned(clients, merchant, pg_dsn):
    """Returns clawed back by money value: a doubled coffee (20 points) and an excluded item
    (0 points) of equal price, the coffee returned, clawed back 10 and left the shopper 10
    points the excluded item never earned; returning the excluded item took coffee points
    (found in review)."""
    await setup_db(
        pg_dsn,
        """INSERT INTO earning_rules (merchant_id, id, kind, category, multiplier) VALUES
           ($1, 'no-tobacco', 'category', 'tobacco', 0), ($1, 'coffee-2x', 'category', 'coffee', 2)""",
        merchant,
    )
    till = await clients.pos(merchant)
    coffee = {"sku": "beans", "qty": 2, "price": 500, "category": "coffee"}
    tobacco = {"sku": "cigs", "qty": 1, "price": 1_000, "category": "tobacco"}
    for first, clawed in (("beans", 20), ("cigs", 0)):
        m = (await enrol(till, phone=phone())).member
        sale = unique("s")
        frame = {"type": "sale", "op": sale, "member": m, "total": 2_000}
        got = await ok(till, {**frame, "lines": [coffee, tobacco]})
        assert got.points == 20
        back = await ok(
            till,
            {
                "type": "return",
                "op": unique("r"),
                "member": m,
                "sale": sale,
                "lines": [{"sku": first, "qty": 2 if first == "beans" else 1}],
            },
        )
        assert back.clawback == clawed, (first, back)
        rest = await ok(till, {"type": "return", "op": unique("r"), "member": m, "sale": sale})
        assert rest.clawback == 20 - clawed and rest.balance.posted == 0
    # One of the two coffees: half of what the coffees earned.
    m = (await enrol(till, phone=phone())).member
    sale = unique("s")
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 2_000,
                    "lines": [coffee, tobacco]})  # fmt: skip
    one = await ok(
        till,
        {
            "type": "return",
            "op": unique("r"),
            "member": m,
            "sale": sale,
            "lines": [{"sku": "beans", "qty": 1}],
        },
    )
    assert one.clawback == 10


# Found in a review of this session's changes (failed on the code before the fix):
# The return waits "until every mutating command read before it has ended", but a later
# command that ends first resets session.ledger_ended to None while its own `ended` is still
# pending: a return read after it waits for nothing.
async def test_return_waits_for_its_sale_even_if_a_later_sale_ended_first(clients, merchant, rn):
    till = await clients.pos(merchant)
    x = (await enrol(till, phone=phone())).member
    y = (await enrol(till, phone=phone())).member
    ledger = rn.node.ledger
    real_submit = ledger.submit

    def submit(op):  # member x's lane is busy: its op is queued, applied 0.5 s later
        if op.member != x:
            return real_submit(op)
        if op.origin.ticket is not None:
            op.origin.ticket.queued()
        loop = asyncio.get_running_loop()
        outer = loop.create_future()

        def later() -> None:
            inner = real_submit(op)
            inner.add_done_callback(
                lambda f: (
                    outer.set_exception(f.exception())
                    if f.exception()
                    else outer.set_result(f.result())
                )
            )

        loop.call_later(0.5, later)
        return outer

    ledger.submit = submit
    sale = f"s-{x}"
    sold = asyncio.ensure_future(
        ok(till, {"type": "sale", "op": sale, "member": x, "total": 1_200})
    )
    other = asyncio.ensure_future(
        ok(till, {"type": "sale", "op": f"s-{y}", "member": y, "total": 1_000})
    )
    await other  # y's sale ended first (x's is still in its lane)
    returned = await till.request({"type": "return", "op": f"r-{x}", "member": x, "sale": sale})
    await sold
    assert not isinstance(returned, Error), returned  # got sale_not_found
    assert returned.data.clawback == 12


# Found in a review of this session's changes (failed on the code before the fix):
# A return's retry replays whatever `operations` holds under its op id, of any kind: a
# return that was shed (row left, nothing applied) and whose op id a sale then took is answered
# as applied, with the sale's receipt (+points), where the ledger answered idempotency_conflict.
async def test_a_shed_return_whose_op_a_sale_took_is_not_replayed_as_applied(clients, merchant, rn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = f"s-{m}"
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 1_200})
    ledger = rn.node.ledger
    real_submit = ledger.submit
    shed = {"n": 0}

    def submit(op):  # the return's first attempt is shed by the ledger (nothing applied)
        if getattr(op, "kind", None) == "return" and shed["n"] == 0:
            shed["n"] += 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(StoreUnavailable("the ledger is overloaded: retry the same id"))
            return fut
        return real_submit(op)

    ledger.submit = submit
    ret = {"type": "return", "op": f"r-{m}", "member": m, "sale": sale}
    first = await till.request(ret)
    assert isinstance(first, Error) and first.code == "unavailable", first
    # The same op id is then used by a sale (a client bug, or an id collision).
    other = await ok(till, {"type": "sale", "op": f"r-{m}", "member": m, "total": 500})
    assert other.points == 5
    again = await till.request(ret)
    assert isinstance(again, Error) and again.code == "idempotency_conflict", again
