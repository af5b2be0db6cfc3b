"""Reorder loops through the admin API: create, read, replace, delete; another merchant's
token and an unknown merchant answer 404; bad input (an unknown or durable product, a
negative lead, a template that does not render or reaches for Python internals, a bad
incentive, time zone, share or sequence) is refused with its code and stores nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp

from gateway.merchant_keys import MerchantKeys
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import add_reward, admin, new_merchant, setup_db
from tests.reorder.support import product
from tests.support import running_node, settings_for

TOKEN_A = "admin-token-of-merchant-a-" + "r" * 20


def url(rn: Any, merchant: str, loop: str = "coffee-loop") -> str:
    return f"{rn.url}/admin/v1/merchants/{merchant}/reorder-loops/{loop}"


def spec(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "products": ["beans"],
        "lead_days": 3,
        "messages": [
            {
                "subject": "{{ product }} is running low",
                "text": "Hi {{ name }}, reorder now: {{ link }}"
                "{% if incentive %} and get {{ incentive }}{% endif %}",
                "html": "<p>Hi {{ name }}, <a href='{{ link }}'>reorder</a></p>",
            },
            {"spacing_days": 5, "subject": "Last call", "text": "{{ link }}"},
        ],
        "incentive": {"kind": "points", "points": 200, "attribution_days": 14},
        "channels": ["email", "sms"],
        "quiet_hours": {"start": "21:00", "end": "08:00"},
        "time_zone": "Europe/Paris",
        "cap": {"messages": 1, "days": 7},
        "control_share": 0.2,
    }
    body.update(over)
    return body


async def test_put_get_replace_delete(http, rn, merchant, pg_dsn):
    await product(pg_dsn, merchant, "beans", 21)
    await product(pg_dsn, merchant, "filters", 60)
    assert (await admin(http, "GET", url(rn, merchant)))[0] == 404
    status, made = await admin(http, "PUT", url(rn, merchant), json=spec())
    assert status == 200, made
    assert (made["merchant"], made["loop"]) == (merchant, "coffee-loop")
    assert made["spec"]["messages"][1]["spacing_days"] == 5
    assert made["spec"]["messages"][0]["spacing_days"] == 0  # the default
    assert made["spec"]["incentive"] == {
        "kind": "points",
        "points": 200,
        "reward": None,
        "attribution_days": 14,
    }
    assert made["spec"]["active"] is True
    status, read = await admin(http, "GET", url(rn, merchant))
    assert (status, read) == (200, made)
    status, again = await admin(
        http, "PUT", url(rn, merchant), json=spec(products=["beans", "filters"], incentive=None)
    )
    assert status == 200
    assert again["spec"]["products"] == ["beans", "filters"] and again["spec"]["incentive"] is None
    assert again["created_at"] == made["created_at"] and again["updated_at"] > made["updated_at"]
    # the defaults of a minimal loop
    status, small = await admin(
        http,
        "PUT",
        url(rn, merchant, "small"),
        json={"products": ["beans"], "messages": [{"subject": "s", "text": "t"}]},
    )
    assert status == 200, small
    s = small["spec"]
    assert (s["lead_days"], s["channels"], s["cap"], s["control_share"]) == (
        3,
        ["email"],
        {"messages": 1, "days": 7},
        0.1,
    )
    status, gone = await admin(http, "DELETE", url(rn, merchant))
    assert (status, gone) == (200, {"deleted": "reorder_loop", "loop": "coffee-loop"})
    assert (await admin(http, "GET", url(rn, merchant)))[0] == 404
    status, reply = await admin(http, "DELETE", url(rn, merchant))
    assert (status, reply["error"]) == (404, "not_found")


async def test_bad_loops_are_refused_and_store_nothing(http, rn, merchant, pg_dsn):
    await product(pg_dsn, merchant, "beans", 21)
    await product(pg_dsn, merchant, "grinder", None)  # durable
    await product(pg_dsn, merchant, "old", 30)
    await setup_db(
        pg_dsn,
        "UPDATE catalogue_products SET active = false WHERE merchant_id = $1 AND sku = 'old'",
        merchant,
    )
    msg = {"subject": "s", "text": "t"}
    mro = {"subject": "s", "text": "{{ ''.__class__.__mro__ }}"}
    refused: list[tuple[dict[str, Any], int, str]] = [
        (spec(products=["nope"]), 400, "invalid_field"),
        (spec(products=["grinder"]), 400, "invalid_field"),
        (spec(products=["old"]), 400, "invalid_field"),
        (spec(products=["beans", "beans"]), 400, "invalid_field"),
        (spec(products=[]), 400, "invalid_field"),
        (spec(lead_days=-1), 400, "invalid_field"),
        (spec(messages=[]), 400, "invalid_field"),
        (
            spec(messages=[msg, *([{**msg, "spacing_days": 1}] * 3)]),
            400,
            "invalid_field",
        ),
        (spec(messages=[{**msg, "spacing_days": 2}]), 400, "invalid_field"),
        (spec(messages=[msg, msg]), 400, "invalid_field"),  # the second on the same day
        (spec(messages=[mro]), 400, "invalid_field"),
        (spec(messages=[{**msg, "html": "{{ name.__class__ }}"}]), 400, "invalid_field"),
        (
            spec(messages=[{**msg, "text": "{{ cycler.__init__.__globals__.os }}"}]),
            400,
            "invalid_field",
        ),
        (spec(messages=[{**msg, "text": "{% if %}"}]), 400, "invalid_field"),
        (spec(messages=[{**msg, "subject": "{{ coupon }}"}]), 400, "invalid_field"),
        (spec(messages=[{**msg, "text": "{{ name + 1 }}"}]), 400, "invalid_field"),
        (spec(messages=[{"text": "t"}]), 400, "invalid_field"),
        (spec(incentive={"kind": "points"}), 400, "invalid_field"),
        (spec(incentive={"kind": "points", "points": 0}), 400, "invalid_field"),
        (spec(incentive={"kind": "points", "points": 5, "reward": "r"}), 400, "invalid_field"),
        (spec(incentive={"kind": "reward", "reward": "nope"}), 404, "reward_not_found"),
        (
            spec(incentive={"kind": "points", "points": 5, "attribution_days": 0}),
            400,
            "invalid_field",
        ),
        (spec(channels=[]), 400, "invalid_field"),
        (spec(channels=["push"]), 400, "invalid_field"),
        (spec(channels=["sms", "sms"]), 400, "invalid_field"),
        (spec(quiet_hours={"start": "25:00", "end": "08:00"}), 400, "invalid_field"),
        (spec(quiet_hours={"start": "08:00", "end": "08:00"}), 400, "invalid_field"),
        (spec(time_zone="Mars/Olympus_Mons"), 400, "time_zone_unknown"),
        (spec(control_share=0.6), 400, "invalid_field"),
        (spec(control_share=-0.1), 400, "invalid_field"),
        (spec(cap={"messages": 0, "days": 7}), 400, "invalid_field"),
        (spec(extra=1), 400, "invalid_field"),
    ]
    for body, status, code in refused:
        got, reply = await admin(http, "PUT", url(rn, merchant), json=body)
        assert (got, reply["error"]) == (status, code), body
    assert (await admin(http, "GET", url(rn, merchant)))[0] == 404  # nothing was created
    async with http.put(
        url(rn, merchant), data=b"{not json", headers={"Authorization": "Bearer dev-admin-token"}
    ) as r:
        assert (r.status, (await r.json())["error"]) == (400, "invalid_field")
    status, first = await admin(http, "PUT", url(rn, merchant), json=spec())
    assert status == 200
    for body, status, code in refused:
        got, reply = await admin(http, "PUT", url(rn, merchant), json=body)
        assert (got, reply["error"]) == (status, code), body
    assert (await admin(http, "GET", url(rn, merchant)))[1] == first  # nor changed
    # the refusal says why
    _, reply = await admin(http, "PUT", url(rn, merchant), json=spec(messages=[mro]))
    assert "__class__" in reply["message"] and "unsafe" in reply["message"]
    _, reply = await admin(http, "PUT", url(rn, merchant), json=spec(products=["grinder"]))
    assert "grinder" in reply["message"]
    # a reward incentive of the programme is taken
    await add_reward(pg_dsn, merchant, "free-bag", 1, 1200)
    status, coupon = await admin(
        http,
        "PUT",
        url(rn, merchant),
        json=spec(incentive={"kind": "reward", "reward": "free-bag"}),
    )
    assert status == 200 and coupon["spec"]["incentive"]["reward"] == "free-bag"


async def test_another_merchants_token_or_an_unknown_merchant_answers_404(
    http, pg_dsn, redis_prefix
):
    mine, other = await new_merchant(pg_dsn), await new_merchant(pg_dsn)
    await product(pg_dsn, mine, "beans", 21)
    await product(pg_dsn, other, "beans", 21)
    keys = MerchantKeys.parse(
        {mine: {"signing_keys": {"k-1": "k" * 40}, "admin_tokens": [TOKEN_A]}},
        "dev-admin-token",
    )
    s = settings_for(pg_dsn, REDIS_URL, "rl")
    s = replace(
        s, auth=replace(s.auth, merchant_keys=keys), server=replace(s.server, reorder_seconds=0)
    )
    async with running_node(s, redis_prefix) as node:
        token = {"Authorization": f"Bearer {TOKEN_A}"}

        async def call(method: str, merchant: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, url(node, merchant), json=body, headers=token) as r:
                return r.status, await r.json()

        assert (await call("PUT", mine, spec(time_zone="UTC")))[0] == 200
        assert (await admin(http, "PUT", url(node, other), json=spec()))[0] == 200
        for method, body in (("GET", None), ("PUT", spec()), ("DELETE", None)):
            status, reply = await call(method, other, body)
            assert (status, reply["error"]) == (404, "not_found"), method
            status, reply = await call(method, unique("mer"), body)
            assert (status, reply["error"]) == (404, "not_found"), method
            status, reply = await admin(http, method, url(node, unique("mer")), json=body)
            assert (status, reply["error"]) == (404, "not_found"), method
        # the other merchant's loop is untouched, and mine is still mine
        status, theirs = await admin(http, "GET", url(node, other))
        assert status == 200 and theirs["spec"]["time_zone"] == "Europe/Paris"
        status, own = await call("GET", mine)
        assert status == 200 and own["spec"]["time_zone"] == "UTC"
    assert isinstance(http, aiohttp.ClientSession)
