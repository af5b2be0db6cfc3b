"""Slice 2: every sale (register or web shop) recorded with its lines, channel, store and points,
keyed by the sale's op (retries never duplicate), queryable per member with keyset pages."""

from __future__ import annotations

from tests.conftest import unique
from tests.loyalty_support import admin, enrol, err, ok, phone


def sale(op: str, member: str, total: int, lines: list[dict] | None = None) -> dict:
    frame = {"type": "sale", "op": op, "member": member, "total": total}
    if lines is not None:
        frame["lines"] = lines
    return frame


async def test_sales_from_every_channel_in_one_history(clients, merchant):
    till = await clients.pos(merchant, store="store-9", terminal="till-2")
    web = await clients.pos(merchant, store="web", terminal="shop", channel="web")
    m = (await enrol(till, phone=phone())).member
    lines = [
        {"sku": "latte", "qty": 2, "price": 450, "category": "coffee", "name": "Latte"},
        {"sku": "bagel", "qty": 1, "price": 300, "category": "bakery"},
    ]
    r1 = await ok(till, sale("h-1-" + m, m, 1200, lines))
    r2 = await ok(web, sale("h-2-" + m, m, 5000))
    assert (r1.points, r2.points) == (12, 50)
    page = await ok(till, {"type": "history", "member": m})
    assert [p.op for p in page.purchases] == ["h-2-" + m, "h-1-" + m]
    newest, oldest = page.purchases
    assert (newest.channel, newest.store, newest.total, newest.points) == ("web", "web", 5000, 50)
    assert (oldest.channel, oldest.store, oldest.points) == ("pos", "store-9", 12)
    assert [(ln.sku, ln.qty, ln.price, ln.category) for ln in oldest.lines] == [
        ("latte", 2, 450, "coffee"),
        ("bagel", 1, 300, "bakery"),
    ]
    assert oldest.lines[0].name == "Latte"
    assert page.next is None


async def test_retries_never_duplicate_and_conflicts_are_refused(clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    frame = sale("dup-" + m, m, 999, [{"sku": "a", "qty": 1, "price": 999}])
    first = await ok(till, frame)
    again = await ok(till, frame)
    assert again == first
    assert (await err(till, sale("dup-" + m, m, 1000))).code == "idempotency_conflict"
    page = await ok(till, {"type": "history", "member": m})
    assert len(page.purchases) == 1
    bal = await ok(till, {"type": "balance", "member": m})
    assert bal.posted == 9 and bal.version == 1


async def test_keyset_pagination_walks_every_sale_once(clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    for i in range(7):
        await ok(till, sale(f"p{i}-{m}", m, 100 * (i + 1)))
    seen: list[str] = []
    before = None
    while True:
        frame = {"type": "history", "member": m, "limit": 3}
        if before:
            frame["before"] = before
        page = await ok(till, frame)
        seen += [p.op for p in page.purchases]
        if page.next is None:
            break
        before = page.next
    assert seen == [f"p{i}-{m}" for i in reversed(range(7))]


async def test_history_scope(clients, merchant):
    till = await clients.pos(merchant)
    a = (await enrol(till, phone=phone())).member
    b = (await enrol(till, phone=phone())).member
    await ok(till, sale("sc-" + a, a, 500))
    app = await clients.app(merchant, a)
    mine = await ok(app, {"type": "history", "member": a})
    assert [p.op for p in mine.purchases] == ["sc-" + a]
    assert (await err(app, {"type": "history", "member": b})).code == "forbidden"
    assert (await err(till, {"type": "history", "member": "nobody"})).code == "member_not_found"


async def test_retry_after_a_rule_change_replays_the_first_receipt(clients, merchant, http, rn):
    """The sale and its points are one ledger transaction: a retry is identified by what was
    bought, so a changed earning rate in between does not turn it into a conflict or a second
    earn."""
    from tests.loyalty_support import ADMIN

    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    frame = sale("rr-" + m, m, 1000)
    first = await ok(till, frame)
    assert first.points == 10
    url = f"{rn.url}/admin/v1/merchants/{merchant}"
    async with http.put(url, json={"points_per_unit": "3"}, headers=ADMIN) as r:
        assert r.status == 200, await r.text()
    assert (await ok(till, sale("rr2-" + m, m, 1000))).points == 30  # the new rate applies
    again = await ok(till, frame)
    assert again == first
    page = await ok(till, {"type": "history", "member": m})
    assert sorted(p.points for p in page.purchases) == [10, 30]


async def test_history_counts_only_applied_returns(clients, merchant, pg_dsn):
    """History counted a return row whose op id the ledger holds for another operation (a
    row left by a node that died before forgetting it): returned_points read 200 on a
    100-point sale, where the return rules ignore that row (found in review)."""
    import asyncpg

    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    first = unique("s")
    await ok(till, sale(first, m, 10_000))
    taken = unique("used")
    await ok(till, sale(taken, m, 100))
    refused = await err(till, {"type": "return", "op": taken, "member": m, "sale": first})
    assert refused.code == "idempotency_conflict"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            """INSERT INTO sale_returns (merchant_id, op_id, sale_op, member_id, lines, value,
                                         clawback, restored, fingerprint)
               VALUES ($1, $2, $3, $4, '{}', 10000, 100, 0, '\\x00')""",
            merchant,
            taken,
            first,
            m,
        )
    finally:
        await conn.close()
    back = await ok(till, {"type": "return", "op": unique("r"), "member": m, "sale": first})
    assert back.clawback == 100
    page = await ok(till, {"type": "history", "member": m})
    p = next(x for x in page.purchases if x.op == first)
    assert p.returned_points == p.points == 100, p


async def test_an_erased_members_history_and_pass_are_not_served(clients, http, rn, merchant):
    """Found in review: after an erase the admin history answered 404 and the cashier view
    member_not_found, but the websocket ``history`` still listed the purchases (stores,
    amounts, SKUs) to any register, and ``pass`` still issued a pass."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone(), name="Gone")).member
    line = {"sku": "SKU-1", "qty": 1, "price": 5_000, "name": "Test item"}
    await ok(till, sale(unique("s"), m, 5_000, [line]))
    assert (await ok(till, {"type": "history", "member": m})).purchases
    assert (await admin(http, "DELETE", f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}"))[
        0
    ] == 200
    for frame in ({"type": "history", "member": m}, {"type": "pass", "member": m}):
        assert (await err(till, frame)).code == "member_not_found", frame
