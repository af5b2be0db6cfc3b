"""Purchase aggregates: kept in the sale's and the return's transaction (a retried sale counts
once, a refused return takes nothing back, a partial return takes back its lines on the sale's
day), shown in the cashier view, combined by a merge, gone with an erasure, in the export."""

from __future__ import annotations

import asyncpg

from tests.conftest import unique
from tests.loyalty_support import admin, enrol, err, ok, phone

KITCHEN = [
    {"sku": "pan", "qty": 2, "price": 2_000, "category": "kitchen", "brand": "acme"},
    {"sku": "knife", "qty": 1, "price": 3_000, "category": "kitchen", "brand": "edge"},
    {"sku": "tea", "qty": 1, "price": 500, "category": "grocery"},
]


async def rows(pg_dsn: str, member: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        found = await conn.fetch(
            """SELECT dim, key, sum(units) u, sum(spend) s, sum(visits) v
                 FROM member_purchase_days WHERE member_id = $1 GROUP BY dim, key""",
            member,
        )
    finally:
        await conn.close()
    return {(r["dim"], r["key"]): (r["u"], r["s"], r["v"]) for r in found}


async def test_a_sale_counts_once_and_a_return_takes_back_its_lines(clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = {"type": "sale", "op": unique("s"), "member": m, "total": 7_000, "lines": KITCHEN}
    first = await ok(till, sale)
    assert await ok(till, sale) == first  # the retry replays: nothing added
    web = await clients.pos(merchant, channel="web")
    await ok(web, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000})
    got = await rows(pg_dsn, m)
    assert got[("t", "")] == (4, 8_000, 2)
    assert got[("h", "pos")] == (4, 7_000, 1) and got[("h", "web")] == (0, 1_000, 1)
    assert got[("c", "kitchen")] == (3, 7_000, 1)  # two lines, one visit
    assert got[("b", "acme")] == (2, 4_000, 1) and got[("s", "tea")] == (1, 500, 1)

    # a refused return (more than was bought) takes nothing back
    bad = await err(
        till,
        {
            "type": "return",
            "op": unique("r"),
            "member": m,
            "sale": sale["op"],
            "lines": [{"sku": "pan", "qty": 3}],
        },
    )
    assert bad.code == "return_exceeds_sale"
    assert await rows(pg_dsn, m) == got
    back = {
        "type": "return",
        "op": unique("r"),
        "member": m,
        "sale": sale["op"],
        "lines": [{"sku": "pan", "qty": 2}],
    }
    await ok(till, back)
    await ok(till, back)  # retried: taken back once
    after = await rows(pg_dsn, m)
    # the pans' value leaves the category, the brand, the SKU; the total loses the share of
    # what was paid (the lines: 4000 of 7500; 7000 * 4000 / 7500 = 3733)
    assert after[("c", "kitchen")] == (1, 3_000, 1)
    assert after[("b", "acme")] == (0, 0, 1) and after[("s", "pan")] == (0, 0, 1)
    assert after[("t", "")] == (2, 8_000 - 3_733, 2)
    # on the sale's day: no new day rows
    conn = await asyncpg.connect(pg_dsn)
    try:
        days = await conn.fetchval(
            "SELECT count(DISTINCT day) FROM member_purchase_days WHERE member_id = $1", m
        )
    finally:
        await conn.close()
    assert days == 1

    view = await ok(till, {"type": "cashier_view", "member": m})
    p = view.purchases
    assert (p.spend, p.visits, p.units, p.channels) == (4_267, 2, 2, {"pos": 1, "web": 1})
    assert p.last is not None and p.first == p.last
    assert [(c.key, c.units) for c in p.categories] == [("kitchen", 1), ("grocery", 1)]
    assert [b.key for b in p.brands] == ["edge", "acme"]


async def test_a_merge_adds_the_duplicates_figures_and_an_erasure_removes_them(
    clients, http, rn, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    keep = (await enrol(till, phone=phone())).member
    dup = (await enrol(till, phone=phone())).member
    lines = KITCHEN[:1]
    await ok(
        till, {"type": "sale", "op": unique("s"), "member": keep, "total": 4_000, "lines": lines}
    )
    await ok(
        till, {"type": "sale", "op": unique("s"), "member": dup, "total": 4_000, "lines": lines}
    )
    status, body = await admin(
        http,
        "POST",
        f"{rn.url}/admin/v1/merchants/{merchant}/members/{keep}/merge",
        json={"source": dup, "op": unique("merge")},
    )
    assert status == 200, body
    assert body["moved"]["purchase_days"] == 5  # t, h, c, b, s of one day
    assert await rows(pg_dsn, dup) == {}
    got = await rows(pg_dsn, keep)
    assert got[("t", "")] == (4, 8_000, 2) and got[("c", "kitchen")] == (4, 8_000, 2)

    status, export = await admin(
        http, "GET", f"{rn.url}/admin/v1/merchants/{merchant}/members/{keep}/export"
    )
    assert status == 200
    agg = export["purchase_aggregates"]
    assert (agg["spend"], agg["visits"]) == (8_000, 2)
    assert agg["categories"][0]["key"] == "kitchen"

    status, _ = await admin(
        http, "DELETE", f"{rn.url}/admin/v1/merchants/{merchant}/members/{keep}"
    )
    assert status == 200
    assert await rows(pg_dsn, keep) == {}


async def test_a_node_without_sales_lines_keeps_totals(clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale = {"type": "sale", "op": unique("s"), "member": m, "total": 2_500}
    await ok(till, sale)
    await ok(
        till, {"type": "return", "op": unique("r"), "member": m, "sale": sale["op"], "amount": 500}
    )
    assert await rows(pg_dsn, m) == {("t", ""): (0, 2_000, 1), ("h", "pos"): (0, 2_000, 1)}
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert view.purchases.categories == [] and view.purchases.spend == 2_000
