"""Segments through the admin API and live: a sale puts a member in, a return takes it out, a
tier change and a profile edit move it; membership changes land on the merchant's stream; the
full recompute agrees with the live path; sizes and pages; bad input changes nothing; another
merchant's token or an unknown merchant is 404."""

from __future__ import annotations

from typing import Any

import msgspec

from tests.conftest import unique
from tests.loyalty_support import admin, enrol, ok, phone, setup_db

KITCHEN_FAN = {
    "type": "all",
    "conditions": [
        {"type": "spend", "min": 10_000, "within_days": 365},
        {"type": "bought", "of": "category", "key": "kitchen", "min": 3, "within_days": 180},
        {"type": "consent", "channel": "email"},
    ],
}
PANS = [{"sku": "pan", "qty": 3, "price": 4_000, "category": "kitchen", "brand": "acme"}]


def url(rn: Any, merchant: str, path: str = "") -> str:
    return f"{rn.url}/admin/v1/merchants/{merchant}/segments{path}"


async def put(http: Any, rn: Any, merchant: str, segment: str, cond: Any) -> tuple[int, Any]:
    return await admin(http, "PUT", url(rn, merchant, f"/{segment}"), json={"condition": cond})


async def in_segment(http: Any, rn: Any, merchant: str, segment: str) -> list[str]:
    await rn.node.segments.idle()  # the live refreshes run right after the replies
    status, page = await admin(http, "GET", url(rn, merchant, f"/{segment}/members"))
    assert status == 200, page
    return [m["member"] for m in page["members"]]


async def stream(rn: Any, merchant: str) -> list[dict[str, Any]]:
    node = rn.node
    await node.segments.idle()
    entries = await node.redis.xrange(node.keys.segment_events(merchant))
    return [msgspec.json.decode(e[1][b"change"]) for e in entries]


async def test_a_sale_puts_a_member_in_and_a_return_takes_it_out(clients, http, rn, merchant):
    status, seg = await put(http, rn, merchant, "kitchen-fans", KITCHEN_FAN)
    assert status == 200, seg
    assert seg["size"] == 0
    till = await clients.pos(merchant)
    app_member = (await enrol(till, phone=phone())).member
    app = await clients.app(merchant, app_member)
    await rn.node.segments.idle()
    await ok(app, {"type": "update_profile", "member": app_member, "consent": {"email": True}})
    await rn.node.segments.idle()  # else the sale's refresh is the profile's (one per member)
    sale = {"type": "sale", "op": unique("s"), "member": app_member, "total": 12_000, "lines": PANS}
    await ok(till, sale)
    assert await in_segment(http, rn, merchant, "kitchen-fans") == [app_member]
    # a partial return: one pan back leaves 2 kitchen units (and 8000 spent)
    await ok(
        till,
        {
            "type": "return",
            "op": unique("r"),
            "member": app_member,
            "sale": sale["op"],
            "lines": [{"sku": "pan", "qty": 1}],
        },
    )
    assert await in_segment(http, rn, merchant, "kitchen-fans") == []
    changes = [c for c in await stream(rn, merchant) if c["member"] == app_member]
    assert [(c["entered"], c["left"], c["cause"]) for c in changes] == [
        (["kitchen-fans"], [], "sale"),
        ([], ["kitchen-fans"], "return"),
    ]
    # the full pass finds the same
    status, done = await admin(http, "POST", url(rn, merchant, "/recompute"), json={})
    assert status == 200 and (done["entered"], done["left"]) == (0, 0), done


async def test_a_profile_edit_and_a_tier_change_move_members(clients, http, rn, merchant, pg_dsn):
    await setup_db(
        pg_dsn, "INSERT INTO tiers (merchant_id, id, threshold) VALUES ($1, 'gold', 100)", merchant
    )
    assert (await put(http, rn, merchant, "gold", {"type": "tier", "in": ["gold"]}))[0] == 200
    assert (await put(http, rn, merchant, "mailable", {"type": "consent", "channel": "email"}))[
        0
    ] == 200
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await rn.node.segments.idle()
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 10_000})  # 100 pts
    assert await in_segment(http, rn, merchant, "gold") == [m]
    app = await clients.app(merchant, m)
    await ok(app, {"type": "update_profile", "member": m, "consent": {"email": True}})
    assert await in_segment(http, rn, merchant, "mailable") == [m]
    await ok(app, {"type": "update_profile", "member": m, "consent": {"email": False}})
    assert await in_segment(http, rn, merchant, "mailable") == []
    causes = [(c["cause"], c["entered"], c["left"]) for c in await stream(rn, merchant)]
    assert ("tier", ["gold"], []) in causes
    assert ("profile", ["mailable"], []) in causes and ("profile", [], ["mailable"]) in causes


async def test_a_definition_change_recomputes_and_pages_list_every_member(
    clients, http, rn, merchant
):
    till = await clients.pos(merchant)
    members = []
    for i in range(7):
        m = (await enrol(till, phone=phone())).member
        members.append(m)
        await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000 * (i + 1)})
    status, _ = await put(http, rn, merchant, "big", {"type": "spend", "min": 3_000})
    assert status == 200
    await rn.node.segments.idle()
    status, seg = await admin(http, "GET", url(rn, merchant, "/big"))
    assert status == 200 and seg["size"] == 5 and seg["computed_at"] is not None
    want = sorted(members[2:])
    got, after = [], None
    while True:
        q = "?limit=2" + (f"&after={after}" if after else "")
        status, page = await admin(http, "GET", url(rn, merchant, f"/big/members{q}"))
        assert status == 200
        got += [m["member"] for m in page["members"]]
        after = page["next"]
        if after is None:
            break
    assert got == want
    # tighten it: the pass after the change takes members out
    await put(http, rn, merchant, "big", {"type": "spend", "min": 6_000})
    await rn.node.segments.idle()
    assert await in_segment(http, rn, merchant, "big") == sorted(members[5:])
    status, listing = await admin(http, "GET", url(rn, merchant))
    assert status == 200
    assert [(s["segment"], s["size"]) for s in listing["segments"]] == [("big", 2)]
    status, gone = await admin(http, "DELETE", url(rn, merchant, "/big"))
    assert status == 200 and gone == {"deleted": "big"}
    assert (await admin(http, "GET", url(rn, merchant, "/big")))[0] == 404


async def test_bad_input_changes_nothing(http, rn, merchant):
    assert (await put(http, rn, merchant, "vip", {"type": "spend", "min": 100}))[0] == 200
    before = (await admin(http, "GET", url(rn, merchant, "/vip")))[1]
    for bad in (
        {"type": "loyal"},
        {"type": "all", "conditions": [{"type": "spend", "min": 1}, {"type": "nope"}]},
        {"type": "spend", "min": 10, "max": 1},
    ):
        status, body = await put(http, rn, merchant, "vip", bad)
        assert (status, body["error"]) == (400, "invalid_field"), body
    status, body = await admin(http, "PUT", url(rn, merchant, "/vip"), json={"condtion": {}})
    assert (status, body["error"]) == (400, "invalid_field")
    after = (await admin(http, "GET", url(rn, merchant, "/vip")))[1]
    assert after == before
    assert (await admin(http, "GET", url(rn, merchant, "/vip/members?limit=0")))[0] == 400
    status, body = await admin(http, "POST", url(rn, merchant, "/recompute"), json={"segment": "x"})
    assert (status, body["error"]) == (404, "not_found")


ADMIN_OTHER = "admin-token-of-the-other-merchant-" + "z" * 20


async def test_another_merchants_token_or_an_unknown_merchant_is_not_found(
    http, pg_dsn, redis_prefix, merchant
):
    from dataclasses import replace

    from gateway.merchant_keys import MerchantKeys
    from tests.conftest import REDIS_URL
    from tests.loyalty_support import new_merchant
    from tests.support import running_node, settings_for

    other = await new_merchant(pg_dsn)
    s = settings_for(pg_dsn, REDIS_URL, "sg")
    keys = MerchantKeys.parse({other: {"admin_tokens": [ADMIN_OTHER]}}, "dev-admin-token")
    s = replace(s, auth=replace(s.auth, merchant_keys=keys))
    async with running_node(s, redis_prefix) as rn:
        assert (await put(http, rn, merchant, "vip", {"type": "spend", "min": 100}))[0] == 200
        theirs = {"Authorization": f"Bearer {ADMIN_OTHER}"}
        for method, path in (
            ("GET", ""),
            ("GET", "/vip"),
            ("PUT", "/vip"),
            ("DELETE", "/vip"),
            ("GET", "/vip/members"),
            ("POST", "/recompute"),
        ):
            body = {"condition": {"type": "spend", "min": 1}} if method == "PUT" else None
            async with http.request(
                method, url(rn, merchant, path), json=body, headers=theirs
            ) as resp:
                assert resp.status == 404, (method, path)
                assert (await resp.json())["error"] == "not_found"
            status, reply = await admin(http, method, url(rn, unique("mer"), path), json=body)
            assert (status, reply["error"]) == (404, "not_found"), (method, path)
        # the other merchant's own token reaches its own segments
        async with http.get(url(rn, other), headers=theirs) as resp:
            assert resp.status == 200 and (await resp.json()) == {"segments": []}
        status, seg = await admin(http, "GET", url(rn, merchant, "/vip"))
        assert status == 200 and seg["condition"] == {"type": "spend", "min": 100}


async def test_the_nightly_pass_from_cron_recomputes_every_merchant(
    clients, http, rn, merchant, pg_dsn
):
    from gateway.passes import segments_once

    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 5_000})
    assert (await put(http, rn, merchant, "recent", {"type": "recency", "max_days": 0}))[0] == 200
    assert await in_segment(http, rn, merchant, "recent") == [m]
    # a day on, the sale is a day old: what only a pass sees (here: the row says so)
    await setup_db(pg_dsn, "UPDATE member_purchase_days SET day = day - 1 WHERE member_id = $1", m)
    done = dict(await segments_once(rn.node.settings, merchant))
    assert (done[merchant].members, done[merchant].left) == (1, 1)
    assert await in_segment(http, rn, merchant, "recent") == []
