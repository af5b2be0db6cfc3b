"""Manual points adjustments through the admin API (gateway/adjustments), on a real node over
the real PostgreSQL and Redis: credits and debits posted through the ledger and pushed live,
each with its reason and author; a retry applies once; a debit never overdraws; bad input,
unknown and other merchants' members change nothing."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from protocol.messages import BalanceChanged
from tests.api.test_merchant_keys import ADMIN_A, _keys
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import admin, enrol, fetch, new_merchant, next_push, ok, phone
from tests.support import running_node, settings_for


def _url(rn, merchant: str, member: str) -> str:
    return f"{rn.url}/admin/v1/merchants/{merchant}/members/{member}/adjustments"


async def _rows(pg_dsn: str, merchant: str) -> list[tuple[str, int, str, str]]:
    rows = await fetch(
        pg_dsn,
        "SELECT op_id, points, reason, actor FROM point_adjustments WHERE merchant_id = $1"
        " ORDER BY at, op_id",
        merchant,
    )
    return [(r["op_id"], r["points"], r["reason"], r["actor"]) for r in rows]


async def test_a_credit_and_a_debit_are_posted_pushed_and_listed(
    http, rn, clients, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    phone_app = await clients.app(merchant, m)
    await ok(phone_app, {"type": "subscribe", "member": m})
    url = _url(rn, merchant, m)
    status, credit = await admin(
        http, "POST", url, json={"op": "adj-1", "points": 250, "reason": "broken mug, sorry"}
    )
    assert status == 200, credit
    assert (credit["member"], credit["points"], credit["balance"]["available"]) == (m, 250, 250)
    push = await next_push(phone_app, BalanceChanged)
    assert (push.cause.kind, push.cause.op, push.available) == ("adjustment", "adj-1", 250)
    status, debit = await admin(
        http, "POST", url, json={"op": "adj-2", "points": -100, "reason": "double earn on 4/12"}
    )
    assert status == 200 and debit["balance"]["available"] == 150
    assert (await ok(till, {"type": "balance", "member": m})).available == 150
    status, listed = await admin(http, "GET", url)
    assert status == 200
    assert [(a["op"], a["points"], a["reason"], a["actor"]) for a in listed["adjustments"]] == [
        ("adj-2", -100, "double earn on 4/12", "operator"),
        ("adj-1", 250, "broken mug, sorry", "operator"),
    ]
    older = listed["adjustments"][0]["at"]
    status, page = await admin(http, "GET", url + f"?before={older}&limit=1")
    assert [a["op"] for a in page["adjustments"]] == (
        ["adj-1"] if older > listed["adjustments"][1]["at"] else []
    )
    status, export = await admin(
        http, "GET", f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}/export"
    )
    assert [(e["kind"], e["op"], e["posted_delta"]) for e in export["ledger"]] == [
        ("adjustment", "adj-1", 250),
        ("adjustment", "adj-2", -100),
    ]
    assert [a["op"] for a in export["adjustments"]] == ["adj-1", "adj-2"]


async def test_a_retry_applies_once_and_another_body_under_its_op_is_a_conflict(
    http, rn, clients, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    url = _url(rn, merchant, m)
    body = {"op": "goodwill-7", "points": 40, "reason": "late delivery"}
    first = await admin(http, "POST", url, json=body)
    again = await admin(http, "POST", url, json=body)
    assert first == again and first[0] == 200
    for other in ({**body, "points": 41}, {**body, "reason": "something else"}):
        status, reply = await admin(http, "POST", url, json=other)
        assert (status, reply["error"]) == (409, "idempotency_conflict")
    assert (await ok(till, {"type": "balance", "member": m})).available == 40
    assert await _rows(pg_dsn, merchant) == [("goodwill-7", 40, "late delivery", "operator")]


async def test_a_debit_never_overdraws_even_two_at_once(http, rn, clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    url = _url(rn, merchant, m)
    await admin(http, "POST", url, json={"op": "in", "points": 100, "reason": "start"})
    status, reply = await admin(
        http, "POST", url, json={"op": "too-much", "points": -101, "reason": "x"}
    )
    assert (status, reply["error"]) == (409, "insufficient_points")
    answers = await asyncio.gather(
        *(
            admin(http, "POST", url, json={"op": f"out-{i}", "points": -60, "reason": "fix"})
            for i in range(2)
        )
    )
    assert sorted(s for s, _ in answers) == [200, 409]
    assert (await ok(till, {"type": "balance", "member": m})).available == 40
    assert [r[0] for r in await _rows(pg_dsn, merchant)].count("too-much") == 0
    assert len(await _rows(pg_dsn, merchant)) == 2  # the credit and the one debit applied


async def test_bad_input_and_other_merchants_members_change_nothing(
    http, rn, clients, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    other = await new_merchant(pg_dsn)
    theirs = (await enrol(await clients.pos(other), phone=phone())).member
    url = _url(rn, merchant, m)
    for body, status, code in (
        ({"op": "a", "points": 0, "reason": "nothing"}, 400, "invalid_field"),
        ({"op": "a", "points": 5}, 400, "invalid_field"),
        ({"op": "a", "points": 5, "reason": ""}, 400, "invalid_field"),
        ({"op": "a", "points": 5, "reason": "r" * 501}, 400, "invalid_field"),
        ({"op": "a", "points": 5, "reason": "r", "at": 1}, 400, "invalid_field"),
        ({"op": "no spaces", "points": 5, "reason": "r"}, 400, "invalid_field"),
        ({"op": "a", "points": 10**12, "reason": "r"}, 400, "invalid_field"),
        ({"op": "a", "points": 5.5, "reason": "r"}, 400, "invalid_field"),
    ):
        got, reply = await admin(http, "POST", url, json=body)
        assert (got, reply["error"]) == (status, code), body
    for target in ("m-nobody", theirs):  # unknown, and another merchant's member
        got, reply = await admin(
            http, "POST", _url(rn, merchant, target), json={"op": "b", "points": 5, "reason": "r"}
        )
        assert (got, reply["error"]) == (404, "member_not_found"), target
    assert await _rows(pg_dsn, merchant) == []
    assert (await ok(till, {"type": "balance", "member": m})).available == 0


async def test_a_merchants_own_token_is_the_author_and_reaches_no_other_merchant(
    http, pg_dsn, redis_prefix
):
    a, b = await new_merchant(pg_dsn), await new_merchant(pg_dsn)
    s = settings_for(pg_dsn, REDIS_URL, "adj")
    s = replace(s, auth=replace(s.auth, merchant_keys=_keys(a, b)))
    async with running_node(s, redis_prefix) as node:
        own = {"Authorization": f"Bearer {ADMIN_A}"}
        async with http.post(
            f"{node.url}/admin/v1/merchants/{a}/members", json={"phone": phone()}, headers=own
        ) as resp:
            m = (await resp.json())["member"]
        body = {"op": unique("adj"), "points": 15, "reason": "welcome back"}
        async with http.post(_url(node, a, m), json=body, headers=own) as resp:
            assert resp.status == 200, await resp.text()
        for method in ("POST", "GET"):
            async with http.request(
                method, _url(node, b, m), json=body if method == "POST" else None, headers=own
            ) as resp:
                assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    assert [r[3] for r in await _rows(pg_dsn, a)] == [f"merchant:{a}"]


async def test_an_erasure_scrubs_the_reasons_and_a_merge_moves_them(
    http, rn, clients, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    dup = (await enrol(till, phone=phone())).member
    await admin(
        http, "POST", _url(rn, merchant, dup), json={"op": "d1", "points": 5, "reason": "for Ada"}
    )
    status, merged = await admin(
        http,
        "POST",
        f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}/merge",
        json={"source": dup, "op": unique("merge")},
    )
    assert status == 200 and merged["moved"]["adjustments"] == 1
    status, export = await admin(
        http, "GET", f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}/export"
    )
    assert [(a["op"], a["reason"]) for a in export["adjustments"]] == [("d1", "for Ada")]
    assert (await admin(http, "DELETE", f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}"))[
        0
    ] == 200
    assert await _rows(pg_dsn, merchant) == [("d1", 5, "erased", "operator")]
