"""Targeted offers: the admin API (validation that changes nothing, isolation between
merchants), each kind worked through a sale, the offers listed in the cashier and wallet
views, exactly-once application (a retried sale, a refused sale giving its use back), and the
limits under concurrency (two registers, one member, one remaining use)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import unique
from tests.loyalty_support import admin, enrol, err, fetch, new_merchant, ok, phone


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


HOUR = timedelta(hours=1)


def url(rn: Any, merchant: str, path: str = "") -> str:
    return f"{rn.url}/admin/v1/merchants/{merchant}/offers{path}"


async def put_offer(http: Any, rn: Any, merchant: str, offer: str, **body: Any) -> tuple[int, Any]:
    body.setdefault("starts_at", iso(-HOUR))
    body.setdefault("ends_at", iso(HOUR))
    return await admin(http, "PUT", url(rn, merchant, f"/{offer}"), json=body)


async def offer_of(http: Any, rn: Any, merchant: str, offer: str, **body: Any) -> Any:
    status, reply = await put_offer(http, rn, merchant, offer, **body)
    assert status == 200, reply
    return reply


def offer_lines(receipt: Any) -> dict[str, int]:
    return {ln.rule: ln.points for ln in receipt.breakdown if ln.rule.startswith("offer:")}


async def sale(till: Any, member: str, total: int = 1_000, **kw: Any) -> Any:
    return await ok(
        till, {"type": "sale", "op": unique("s"), "member": member, "total": total, **kw}
    )


# ----------------------------------------------------------------------------- admin


async def test_put_get_list_delete(http, rn, clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    made = await offer_of(
        http,
        rn,
        merchant,
        "double",
        kind="multiplier",
        multiplier="2",
        members=[m],
        name="Double points",
        total_limit=5,
        per_member_limit=1,
        channels=["store"],
    )
    assert (made["offer"], made["kind"], made["multiplier"], made["members"]) == (
        "double",
        "multiplier",
        "2",
        [m],
    )
    assert made["used"] == 0 and made["active"] and made["channels"] == ["store"]
    status, got = await admin(http, "GET", url(rn, merchant, "/double"))
    assert status == 200 and got == made
    status, listing = await admin(http, "GET", url(rn, merchant))
    assert status == 200 and [o["offer"] for o in listing["offers"]] == ["double"]
    status, gone = await admin(http, "DELETE", url(rn, merchant, "/double"))
    assert (status, gone) == (200, {"deleted": "double"})
    status, got = await admin(http, "GET", url(rn, merchant, "/double"))
    assert status == 200 and got["active"] is False
    assert (await admin(http, "GET", url(rn, merchant, "/nope")))[0] == 404
    assert (await admin(http, "DELETE", url(rn, merchant, "/nope")))[0] == 404
    # members replaced through their own route
    m2 = (await enrol(till, phone=phone())).member
    status, got = await admin(
        http, "PUT", url(rn, merchant, "/double/members"), json={"members": [m2]}
    )
    assert status == 200 and got["members"] == [m2]


async def test_bad_input_gets_a_clear_error_and_changes_nothing(http, rn, clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await offer_of(http, rn, merchant, "keep", kind="fixed_bonus", points=50, members=[m])
    before = (await admin(http, "GET", url(rn, merchant, "/keep")))[1]
    bad: list[dict[str, Any]] = [
        {"kind": "fixed_bonus", "points": 5, "members": [m], "ends_at": iso(-2 * HOUR)},
        {
            "kind": "fixed_bonus",
            "points": 5,
            "members": [m],
            "starts_at": iso(-3 * HOUR),
            "ends_at": iso(-2 * HOUR),
        },
        {"kind": "fixed_bonus", "points": 5, "segments": ["no-such-segment"]},
        {"kind": "fixed_bonus", "points": -5, "members": [m]},
        {"kind": "fixed_bonus", "members": [m]},
        {"kind": "multiplier", "multiplier": "0.5", "members": [m]},
        {"kind": "multiplier", "multiplier": "11", "members": [m]},
        {"kind": "multiplier", "multiplier": "abc", "members": [m]},
        {"kind": "multiplier", "multiplier": "1.23456", "members": [m]},
        {"kind": "bonus_sku", "points": 5, "members": [m]},
        {"kind": "bonus_category", "points": 5, "sku": "x", "members": [m]},
        {"kind": "fixed_bonus", "points": 5},
        {"kind": "fixed_bonus", "points": 5, "members": [m], "channels": []},
        {"kind": "fixed_bonus", "points": 5, "members": [m], "channels": ["moon"]},
        {"kind": "fixed_bonus", "points": 5, "members": [m], "total_limit": 0},
        {"kind": "fixed_bonus", "points": 5, "members": [m], "colour": "red"},
    ]
    for body in bad:
        status, reply = await put_offer(http, rn, merchant, "keep", **body)
        assert (status, reply["error"]) == (400, "invalid_field"), (body, reply)
        assert reply["message"]
    other = await new_merchant(str(rn.node.settings.store.database_url))
    stranger = (await enrol(await clients.pos(other), phone=phone())).member
    status, reply = await put_offer(
        http, rn, merchant, "keep", kind="fixed_bonus", points=5, members=[m, stranger]
    )
    assert (status, reply["error"]) == (404, "member_not_found")
    status, reply = await admin(
        http, "PUT", url(rn, merchant, "/keep/members"), json={"members": [stranger]}
    )
    assert (status, reply["error"]) == (404, "member_not_found")
    assert (await admin(http, "GET", url(rn, merchant, "/keep")))[1] == before
    status, listing = await admin(http, "GET", url(rn, merchant))
    assert [o["offer"] for o in listing["offers"]] == ["keep"]


async def test_the_offer_routes_refuse_another_merchant(http, rn, clients, merchant, pg_dsn):
    other = await new_merchant(pg_dsn)
    m = (await enrol(await clients.pos(merchant), phone=phone())).member
    await offer_of(http, rn, merchant, "mine", kind="fixed_bonus", points=5, members=[m])
    assert (await admin(http, "GET", url(rn, other, "/mine")))[0] == 404
    assert (await admin(http, "DELETE", url(rn, other, "/mine")))[0] == 404
    status, listing = await admin(http, "GET", url(rn, other))
    assert status == 200 and listing["offers"] == []
    ghost = unique("mer")
    body = {
        "kind": "fixed_bonus",
        "points": 5,
        "members": [m],
        "starts_at": iso(-HOUR),
        "ends_at": iso(HOUR),
    }
    for method, path, b in (
        ("GET", "", None),
        ("GET", "/mine", None),
        ("PUT", "/mine", body),
        ("DELETE", "/mine", None),
        ("PUT", "/mine/members", {"members": [m]}),
    ):
        status, reply = await admin(http, method, url(rn, ghost, path), json=b)
        assert (status, reply["error"]) == (404, "not_found"), (method, path)
    status, got = await admin(http, "GET", url(rn, merchant, "/mine"))
    assert status == 200 and got["active"]
    # the other merchant's register neither sees nor presents this merchant's offer
    theirs = await clients.pos(other)
    e = await err(
        theirs, {"type": "sale", "op": unique("s"), "member": m, "total": 100, "offers": ["mine"]}
    )
    assert e.code == "member_not_found"


# ----------------------------------------------------------------------------- each kind


async def uses(pg_dsn: str, merchant: str, offer: str) -> list[Any]:
    return await fetch(
        pg_dsn,
        """SELECT op_id, member_id, points, applied_at IS NOT NULL AS applied FROM offer_uses
            WHERE merchant_id = $1 AND offer_id = $2 ORDER BY op_id""",
        merchant,
        offer,
    )


async def test_each_kind_worked_through_a_sale(http, rn, clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await offer_of(http, rn, merchant, "today", kind="fixed_bonus", points=50, members=[m])
    await offer_of(http, rn, merchant, "kale", kind="bonus_sku", sku="KALE", points=30, members=[m])
    await offer_of(
        http, rn, merchant, "tea", kind="bonus_category", category="tea", points=20, members=[m]
    )
    await offer_of(http, rn, merchant, "x25", kind="multiplier", multiplier="2.5", members=[m])
    lines = [
        {"sku": "KALE", "qty": 1, "price": 600},
        {"sku": "GREEN", "qty": 1, "price": 400, "category": "tea"},
    ]
    # $10 earns 10 base points (one per whole unit); each offer adds its own line
    r = await sale(till, m, 1_000, lines=lines, offers=["today"])
    assert (r.points, offer_lines(r)) == (60, {"offer:today": 50})
    r = await sale(till, m, 1_000, lines=lines, offers=["kale"])
    assert (r.points, offer_lines(r)) == (40, {"offer:kale": 30})
    assert [ln.sku for ln in r.breakdown if ln.rule == "offer:kale"] == ["KALE"]
    r = await sale(till, m, 1_000, lines=lines, offers=["tea"])
    assert (r.points, offer_lines(r)) == (30, {"offer:tea": 20})
    r = await sale(till, m, 1_000, lines=lines, offers=["x25"])
    assert (r.points, offer_lines(r)) == (25, {"offer:x25": 15})  # 10 x 2.5 = 25: 15 extra
    r = await sale(till, m, 1_000, lines=lines, offers=["today", "tea"])
    assert (r.points, offer_lines(r)) == (80, {"offer:today": 50, "offer:tea": 20})
    # the offer's line is in the purchase history's breakdown too
    rows = await fetch(
        pg_dsn,
        "SELECT breakdown::text FROM sales WHERE merchant_id = $1 AND op_id = $2",
        merchant,
        r.op,
    )
    assert '"offer:today"' in rows[0][0]
    assert (await ok(till, {"type": "balance", "member": m})).posted == 60 + 40 + 30 + 25 + 80
    assert [u["applied"] for u in await uses(pg_dsn, merchant, "today")] == [True, True]


async def test_an_offer_that_does_not_apply_refuses_the_sale_and_changes_nothing(
    http, rn, clients, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    outsider = (await enrol(till, phone=phone())).member
    await offer_of(http, rn, merchant, "kale", kind="bonus_sku", sku="KALE", points=30, members=[m])
    await offer_of(
        http, rn, merchant, "web", kind="fixed_bonus", points=5, members=[m], channels=["online"]
    )
    await offer_of(
        http,
        rn,
        merchant,
        "later",
        kind="fixed_bonus",
        points=5,
        members=[m],
        starts_at=iso(HOUR),
        ends_at=iso(2 * HOUR),
    )
    await offer_of(http, rn, merchant, "gone", kind="fixed_bonus", points=5, members=[m])
    await admin(http, "DELETE", url(rn, merchant, "/gone"))
    no_kale = [{"sku": "BREAD", "qty": 1, "price": 1_000}]
    for who, offers in (
        (m, ["kale"]),  # the sale has no KALE
        (m, ["web"]),  # online only
        (m, ["later"]),  # not yet
        (m, ["gone"]),  # withdrawn
        (m, ["nope"]),  # unknown
        (outsider, ["kale"]),  # not targeted
    ):
        e = await err(
            till,
            {
                "type": "sale",
                "op": unique("s"),
                "member": who,
                "total": 1_000,
                "lines": no_kale,
                "offers": offers,
            },
        )
        assert e.code == "offer_not_eligible" and e.message, (who, offers)
    assert (await ok(till, {"type": "balance", "member": m})).posted == 0
    assert await fetch(pg_dsn, "SELECT 1 FROM offer_uses WHERE merchant_id = $1", merchant) == []
    assert await fetch(pg_dsn, "SELECT 1 FROM sales WHERE merchant_id = $1", merchant) == []


# ----------------------------------------------------------------------------- views


async def test_the_cashier_and_wallet_views_list_the_members_offers(http, rn, clients, merchant):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    other = (await enrol(till, phone=phone())).member
    status, _ = await admin(
        http,
        "PUT",
        f"{rn.url}/admin/v1/merchants/{merchant}/segments/big",
        json={"condition": {"type": "spend", "min": 3_000}},
    )
    assert status == 200
    await offer_of(
        http,
        rn,
        merchant,
        "listed",
        kind="fixed_bonus",
        points=5,
        members=[m],
        name="For you",
        channels=["store"],
    )
    await offer_of(
        http, rn, merchant, "app", kind="fixed_bonus", points=7, members=[m], channels=["online"]
    )
    await offer_of(http, rn, merchant, "bigs", kind="multiplier", multiplier="2", segments=["big"])
    await offer_of(
        http, rn, merchant, "used", kind="fixed_bonus", points=1, members=[m], per_member_limit=1
    )
    await sale(till, m, 500, offers=["used"])  # its one use

    async def cashier(who: str) -> list[str]:
        v = await ok(till, {"type": "cashier_view", "member": who})
        return [o.offer for o in v.targeted]

    assert await cashier(m) == ["listed"]  # not the online one, not the used-up one
    assert await cashier(other) == []
    wallet = await ok(await clients.app(merchant, m), {"type": "wallet", "member": m})
    assert [(o.offer, o.kind, o.points) for o in wallet.targeted] == [
        ("app", "fixed_bonus", 7),
        ("listed", "fixed_bonus", 5),
    ]
    assert wallet.targeted[1].name == "For you" and wallet.targeted[1].channels == ["store"]
    await sale(till, m, 5_000)  # now in "big"
    await rn.node.segments.idle()
    assert await cashier(m) == ["bigs", "listed"]
    assert await cashier(other) == []


# ----------------------------------------------------------------------------- exactly once


async def test_a_retried_sale_applies_its_offer_once(http, rn, clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await offer_of(
        http,
        rn,
        merchant,
        "once",
        kind="fixed_bonus",
        points=50,
        members=[m],
        per_member_limit=1,
        total_limit=1,
    )
    frame = {"type": "sale", "op": unique("s"), "member": m, "total": 1_000, "offers": ["once"]}
    first = await ok(till, frame)
    again = await ok(till, frame)  # the till's retry (same op)
    assert first.points == again.points == 60 and offer_lines(again) == {"offer:once": 50}
    await admin(http, "DELETE", url(rn, merchant, "/once"))  # even once it is withdrawn
    assert (await ok(till, frame)).points == 60
    assert (await ok(till, {"type": "balance", "member": m})).posted == 60
    assert [(u["op_id"], u["applied"]) for u in await uses(pg_dsn, merchant, "once")] == [
        (frame["op"], True)
    ]
    assert (await admin(http, "GET", url(rn, merchant, "/once")))[1]["used"] == 1


async def test_a_sale_the_ledger_refuses_gives_its_use_back(http, rn, clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await offer_of(
        http, rn, merchant, "one", kind="fixed_bonus", points=50, members=[m], total_limit=1
    )
    op = unique("s")
    await ok(till, {"type": "sale", "op": op, "member": m, "total": 1_000})
    # the same op again, now presenting the offer: not the same sale (idempotency_conflict)
    e = await err(till, {"type": "sale", "op": op, "member": m, "total": 1_000, "offers": ["one"]})
    assert e.code == "idempotency_conflict"
    assert await uses(pg_dsn, merchant, "one") == []
    assert (await admin(http, "GET", url(rn, merchant, "/one")))[1]["used"] == 0
    r = await sale(till, m, 1_000, offers=["one"])  # the use is still there to take
    assert offer_lines(r) == {"offer:one": 50}


async def test_limits_hold_under_concurrent_sales(http, rn, clients, merchant, pg_dsn):
    """Two registers, one member, one remaining use: exactly one sale gets it, round after
    round; the other is refused and applies nothing."""
    a = await clients.pos(merchant, terminal="t1")
    b = await clients.pos(merchant, terminal="t2")
    m = (await enrol(a, phone=phone())).member
    rounds = 12
    for i in range(rounds):
        limit = {"total_limit": 2} if i % 2 else {"per_member_limit": 2}
        await offer_of(
            http, rn, merchant, f"r{i}", kind="fixed_bonus", points=100, members=[m], **limit
        )
        await sale(a, m, 100, offers=[f"r{i}"])  # one use of two gone: one remains
        frames = [
            {"type": "sale", "op": unique("s"), "member": m, "total": 1_000, "offers": [f"r{i}"]}
            for _ in (a, b)
        ]
        replies = await asyncio.gather(a.request(frames[0]), b.request(frames[1]))
        got = [r for r in replies if getattr(r, "data", None) is not None]
        refused = [r for r in replies if getattr(r, "code", None) == "offer_not_eligible"]
        assert len(got) == 1 and len(refused) == 1, (i, replies)
        assert offer_lines(got[0].data) == {f"offer:r{i}": 100}
        assert len(await uses(pg_dsn, merchant, f"r{i}")) == 2
    posted = (await ok(a, {"type": "balance", "member": m})).posted
    assert posted == rounds * (101 + 110)


async def test_a_merge_never_frees_a_use_and_the_listing_follows_the_survivor(
    http, rn, clients, merchant
):
    till = await clients.pos(merchant)
    dup = (await enrol(till, phone=phone())).member
    survivor = (await enrol(till, phone=phone())).member
    await offer_of(
        http, rn, merchant, "one", kind="fixed_bonus", points=9, members=[dup], per_member_limit=1
    )
    await offer_of(http, rn, merchant, "two", kind="fixed_bonus", points=9, members=[dup])
    await sale(till, dup, 100, offers=["one"])
    status, body = await admin(
        http,
        "POST",
        f"{rn.url}/admin/v1/merchants/{merchant}/members/{survivor}/merge",
        json={"source": dup, "op": unique("merge")},
    )
    assert status == 200, body
    assert (body["moved"]["offer_uses"], body["moved"]["offer_listings"]) == (1, 2)
    view = await ok(till, {"type": "cashier_view", "member": survivor})
    assert [o.offer for o in view.targeted] == ["two"]  # "one" was used by the duplicate
    e = await err(
        till,
        {"type": "sale", "op": unique("s"), "member": survivor, "total": 100, "offers": ["one"]},
    )
    assert e.code == "offer_not_eligible"
    status, got = await admin(http, "GET", url(rn, merchant, "/two"))
    assert got["members"] == [survivor]


# ----------------------------------------------------------------------------- live pushes


async def test_a_segment_entered_mid_visit_pushes_the_offer_to_the_watching_till(
    http, rn, clients, merchant
):
    from protocol.wallet import OffersChanged
    from tests.loyalty_support import next_push

    status, _ = await admin(
        http,
        "PUT",
        f"{rn.url}/admin/v1/merchants/{merchant}/segments/big",
        json={"condition": {"type": "spend", "min": 3_000}},
    )
    assert status == 200
    web = await clients.pos(merchant, terminal="w1", channel="web")
    till = await clients.pos(merchant, terminal="t1")
    m = (await enrol(till, phone=phone())).member
    await offer_of(
        http,
        rn,
        merchant,
        "bigs",
        kind="fixed_bonus",
        points=70,
        segments=["big"],
        per_member_limit=1,
        channels=["store"],
    )
    view = await ok(till, {"type": "cashier_view", "member": m})  # the till watches m
    assert view.targeted == []
    app = await clients.app(merchant, m)
    await ok(app, {"type": "wallet", "member": m})
    # a sale elsewhere (the web shop) puts the member into "big"
    await ok(web, {"type": "sale", "op": unique("s"), "member": m, "total": 5_000})
    pushed = await next_push(till, OffersChanged)
    assert pushed.member == m and [o.offer for o in pushed.targeted] == ["bigs"]
    assert pushed.seq > 0
    assert [o.offer for o in (await next_push(app, OffersChanged)).targeted] == ["bigs"]
    # the till's own sale presents it: applied once; the use pushes the list again (empty)
    r = await sale(till, m, 1_000, offers=["bigs"])
    assert offer_lines(r) == {"offer:bigs": 70}
    assert (await next_push(till, OffersChanged)).targeted == []
    e = await err(
        till, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000, "offers": ["bigs"]}
    )
    assert e.code == "offer_not_eligible"


async def test_an_offer_created_or_withdrawn_is_pushed_to_the_members_it_lists(
    http, rn, clients, merchant
):
    from protocol.wallet import OffersChanged
    from tests.loyalty_support import next_push

    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    app = await clients.app(merchant, m)
    await ok(app, {"type": "wallet", "member": m})
    await offer_of(http, rn, merchant, "hi", kind="fixed_bonus", points=5, members=[m])
    assert [o.offer for o in (await next_push(app, OffersChanged)).targeted] == ["hi"]
    await admin(http, "DELETE", url(rn, merchant, "/hi"))
    assert (await next_push(app, OffersChanged)).targeted == []
