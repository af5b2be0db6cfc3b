"""Slice 7 (and 10): the admin HTTP API, its OpenAPI description, GDPR export/erase, and
merchant isolation on every endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.api import admin, openapi
from tests.conftest import unique
from tests.loyalty_support import ADMIN, member_with_points, ok, phone, setup_db


class Api:
    def __init__(self, http: Any, url: str, merchant: str) -> None:
        self.http = http
        self.base = f"{url}/admin/v1/merchants/{merchant}"

    async def call(
        self, method: str, path: str = "", body: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base + path, json=body, headers=kw.pop("headers", ADMIN), **kw
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)


@pytest.fixture
async def api(http, rn) -> Api:
    a = Api(http, rn.url, unique("mer"))
    status, prog = await a.call(
        "PUT",
        body={"currency": "EUR", "points_per_unit": "2", "region": "FR", "rounding": "sale"},
    )
    assert status == 200, prog
    return a


def test_openapi_is_fresh_and_describes_every_route() -> None:
    text = admin.OPENAPI_PATH.read_text()
    assert text == openapi.render(), "run python -m gateway.api.openapi > gateway/api/openapi.json"
    doc = json.loads(text)
    for method, suffix, _ in admin.ROUTES:
        path = admin.PREFIX + suffix
        assert method.lower() in doc["paths"].get(path, {}), (method, path)
        assert doc["paths"][path][method.lower()]["summary"]


def test_every_operation_has_typed_answers_and_its_own_refusals() -> None:
    doc = openapi.build()
    schemas = doc["components"]["schemas"]
    refusals = set()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith("2") and path != "/admin/v1/openapi.json":
                    schema = next(iter(response["content"].values()))["schema"]
                    ref = schema.get("$ref")
                    assert ref is None or ref.rsplit("/", 1)[1] in schemas, (path, status)
                    assert ref or schema.get("type") == "string", (method, path, status)
                elif int(status) >= 400 and path != "/readyz" and "content" in response:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["allOf"] == [{"$ref": "#/components/schemas/ErrorBody"}]
                    codes = tuple(schema["properties"]["error"]["enum"])
                    refusals.add((status, codes))
            assert op["security"] == ([] if not path.startswith("/admin/") else [{"bearer": []}])
    # the routes do not all list the same refusals (they did: 400, 401, 404, 409, 503 each)
    assert len(refusals) > 8
    void = doc["paths"][admin.PREFIX + "/codes/{code}/void"]["post"]["responses"]
    assert (
        "code_voided"
        in void["409"]["content"]["application/json"]["schema"]["properties"]["error"]["enum"]
    )
    assert "409" not in doc["paths"][admin.PREFIX + "/rules"]["get"]["responses"]
    broadcast = doc["paths"]["/admin/broadcast"]["post"]
    assert broadcast["requestBody"]["required"] and "200" in broadcast["responses"]


async def test_every_route_the_node_serves_is_in_openapi(rn) -> None:
    """Walk the routes of the app the node builds: each is in openapi.json with its method,
    but the pages and their static files (gateway.web: HTML, not an API)."""
    doc = json.loads(admin.OPENAPI_PATH.read_text())
    seen = set()
    for route in rn.runner.app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        handler = route.handler
        if getattr(handler, "__module__", "").startswith("gateway.web"):
            continue
        path = route.resource.canonical if route.resource else ""
        assert route.method.lower() in doc["paths"].get(path, {}), (route.method, path)
        seen.add((route.method, path))
    assert {("GET", "/ws"), ("POST", "/admin/broadcast"), ("GET", "/metrics")} <= seen
    assert len(seen) == sum(len(ops) for ops in doc["paths"].values())


async def test_bearer_token_required(api: Api) -> None:
    assert (await api.call("GET", headers={}))[0] == 401
    assert (await api.call("GET", headers={"Authorization": "Bearer wrong"}))[0] == 401
    assert (await api.call("GET"))[0] == 200


async def test_programme_rules_tiers_rewards(api: Api, clients) -> None:
    status, prog = await api.call("GET")
    assert (prog["currency"], prog["points_per_unit"], prog["region"], prog["rounding"]) == (
        "EUR",
        "2",
        "FR",
        "sale",
    )
    assert (await api.call("PUT", body={"rounding": "nope"}))[0] == 400
    status, rule = await api.call(
        "PUT", "/rules/coffee2", {"kind": "category", "category": "coffee", "multiplier": "2"}
    )
    assert status == 200 and rule["multiplier"] == "2"
    assert (await api.call("PUT", "/rules/bad", {"kind": "product"}))[0] == 400
    status, body = await api.call(
        "PUT",
        "/tiers",
        {
            "tiers": [
                {"id": "silver", "threshold": 100},
                {"id": "gold", "threshold": 1000, "multiplier": "1.5"},
            ]
        },
    )
    assert status == 200 and [t["id"] for t in body["tiers"]] == ["silver", "gold"]
    status, reward = await api.call(
        "PUT",
        "/rewards/ten",
        {"name": "10 EUR off", "cost": 30, "kind": "amount_off", "value": 1000},
    )
    assert status == 200 and reward["cost"] == 30
    merchant = api.base.rsplit("/", 1)[1]
    till = await clients.pos(merchant)
    status, member = await api.call("POST", "/members", {"phone": "06 12 34 56 78", "name": "Zoé"})
    assert status == 201 and member["phone"] == "+33612345678"
    status, again = await api.call("POST", "/members", {"phone": "+33612345678"})
    assert status == 200 and again["member"] == member["member"]
    m = member["member"]
    receipt = await ok(
        till,
        {
            "type": "sale",
            "op": unique("s"),
            "member": m,
            "total": 1_000,
            "lines": [{"sku": "latte", "qty": 2, "price": 500, "category": "coffee"}],
        },
    )
    assert {b.rule: b.points for b in receipt.breakdown} == {"base": 20, "category:coffee": 20}
    status, found = await api.call("GET", "/members", params={"phone": "0612345678"})
    assert status == 200 and found["member"] == m and "tier" not in found  # 40 < 100
    status, page = await api.call("GET", f"/members/{m}/history", params={"limit": "10"})
    assert status == 200 and page["purchases"][0]["points"] == 40
    code = await ok(
        till, {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "ten"}
    )
    status, voided = await api.call("POST", f"/codes/{code.code}/void", {"op": unique("v")})
    assert status == 200 and voided["status"] == "voided" and voided["balance"]["available"] == 40
    assert (await api.call("DELETE", "/rules/coffee2"))[0] == 200
    assert (await api.call("DELETE", "/rules/coffee2"))[0] == 404
    assert (await api.call("DELETE", "/rewards/ten"))[0] == 200
    status, rewards = await api.call("GET", "/rewards")
    assert rewards["rewards"][0]["active"] is False


async def test_the_currency_sets_the_minor_units_and_an_unknown_code_is_400(
    api: Api, clients
) -> None:
    """Found in review: every currency was counted in hundredths (a JPY programme at rate 1
    earned 10 points for ¥1000), and any three capitals were taken as a currency."""
    merchant = api.base.rsplit("/", 1)[1]
    till = await clients.pos(merchant)
    m = await member_with_points(till, 0)

    async def earned(total: int) -> int:
        sale = {"type": "sale", "op": unique("s"), "member": m, "total": total}
        return int((await ok(till, sale)).points)

    status, prog = await api.call("PUT", body={"currency": "JPY", "points_per_unit": "1"})
    assert status == 200 and prog["currency"] == "JPY", prog
    assert await earned(1_000) == 1_000  # ¥1000
    for code in ("ZZZ", "XAU", "XXX", "jpy"):
        status, reply = await api.call("PUT", body={"currency": code})
        assert (status, reply.get("error")) == (400, "invalid_field"), (code, reply)
    assert (await api.call("GET"))[1]["currency"] == "JPY"
    assert (await api.call("PUT", body={"currency": "KWD"}))[0] == 200
    assert await earned(1_000) == 1  # 1.000 KWD
    assert (await api.call("PUT", body={"currency": "USD"}))[0] == 200
    assert await earned(1_000) == 10  # $10.00, as before


async def test_export_and_erase_keep_the_ledger_whole(api: Api, clients) -> None:
    merchant = api.base.rsplit("/", 1)[1]
    till = await clients.pos(merchant)
    status, member = await api.call(
        "POST",
        "/members",
        {"email": "erase.me@example.com", "phone": "+33 6 98 76 54 32", "name": "Eve"},
    )
    m = member["member"]
    for i in range(3):
        await ok(till, {"type": "sale", "op": f"g{i}-{m}", "member": m, "total": 1_000})
    status, data = await api.call("GET", f"/members/{m}/export")
    assert status == 200
    assert data["member"]["email"] == "erase.me@example.com" and data["member"]["name"] == "Eve"
    assert len(data["purchases"]) == 3 and len(data["ledger"]) == 3
    assert sum(e["posted_delta"] for e in data["ledger"]) == data["member"]["balance"]["posted"]
    status, body = await api.call("DELETE", f"/members/{m}")
    assert status == 200 and body["erased"] is True
    assert (await api.call("GET", "/members", params={"email": "erase.me@example.com"}))[0] == 404
    status, after = await api.call("GET", f"/members/{m}/export")
    assert after["member"].get("name", "") == "" and after["member"].get("email") is None
    assert after["member"]["balance"]["posted"] == 60
    assert sum(e["posted_delta"] for e in after["ledger"]) == 60
    # the same phone can enrol again, as a new member
    status, fresh = await api.call("POST", "/members", {"phone": "+33 6 98 76 54 32"})
    assert status == 201 and fresh["member"] != m


async def test_merchant_isolation_on_every_endpoint(api: Api, http, rn, clients) -> None:
    merchant = api.base.rsplit("/", 1)[1]
    till = await clients.pos(merchant)
    await api.call("PUT", "/rules/r1", {"kind": "promotion", "bonus": 5})
    await api.call("PUT", "/rewards/w1", {"cost": 1, "kind": "amount_off", "value": 1})
    await api.call("PUT", "/tiers", {"tiers": [{"id": "t1", "threshold": 1}]})
    number = phone()
    m = (await api.call("POST", "/members", {"phone": number, "card": "ISO-1"}))[1]["member"]
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000})
    code = (
        await ok(till, {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "w1"})
    ).code
    other = Api(http, rn.url, unique("mer"))
    assert (await other.call("PUT", body={"region": "US"}))[0] == 200
    assert (await other.call("GET", "/rules"))[1] == {"rules": []}
    assert (await other.call("GET", "/tiers"))[1] == {"tiers": []}
    assert (await other.call("GET", "/rewards"))[1] == {"rewards": []}
    probes = [
        ("GET", f"/members/{m}", None, None),
        ("GET", f"/members/{m}/history", None, None),
        ("GET", f"/members/{m}/export", None, None),
        ("DELETE", f"/members/{m}", None, None),
        ("GET", "/members", None, {"phone": number}),
        ("GET", "/members", None, {"card": "ISO-1"}),
        ("DELETE", "/rules/r1", None, None),
        ("DELETE", "/rewards/w1", None, None),
        ("POST", f"/codes/{code}/void", {"op": unique("v")}, None),
    ]
    for method, path, body, params in probes:
        status, reply = await other.call(method, path, body, params=params)
        assert status == 404, (method, path, status, reply)
    # an unknown merchant is a 404 everywhere but the programme PUT that creates it
    ghost = Api(http, rn.url, unique("mer"))
    for method, suffix, _ in admin.ROUTES:
        if (method, suffix) == ("PUT", ""):
            continue
        path = suffix.replace("{member}", m).replace("{rule}", "r1").replace("{reward}", "w1")
        path = path.replace("{code}", code)
        body = {"op": "x"} if "void" in path else ({"tiers": []} if suffix == "/tiers" else None)
        if method == "PUT" and body is None:
            body = {"kind": "promotion"} if "rules" in path else {"cost": 1, "kind": "amount_off"}
        status, reply = await ghost.call(method, path, body or {})
        assert status == 404, (method, path, status)
        # the operator's token is told what a merchant's token for another merchant is
        assert reply["error"] == "not_found", (method, path, reply)
    # and merchant A's data is untouched
    assert (await api.call("GET", f"/members/{m}"))[1]["card"] == "ISO-1"


async def test_out_of_range_values_are_400_not_500(api: Api, clients) -> None:
    """Found in review: values the body types allowed but the columns could not hold (a
    multiplier of 8 integer digits in numeric(10, 4), a history cursor past 64 bits) were
    internal errors; a 10,000,000 % discount was accepted."""
    merchant = api.base.rsplit("/", 1)[1]
    for path, body in (
        ("/rules/r1", {"kind": "promotion", "multiplier": "99999999"}),
        ("/tiers", {"tiers": [{"id": "t1", "threshold": 1, "multiplier": "9999999"}]}),
        ("/rewards/pc", {"cost": 10, "kind": "percent_off", "value": 10_000_000}),
        ("/rewards/pc", {"cost": 10, "kind": "percent_off", "value": 0}),
    ):
        status, reply = await api.call("PUT", path, body)
        assert status == 400, (path, body, status, reply)
    assert (await api.call("PUT", "/rules/r1", {"kind": "promotion", "multiplier": "999999"}))[
        0
    ] == 200
    assert (await api.call("PUT", "/rewards/pc", {"cost": 10, "kind": "percent_off", "value": 15}))[
        0
    ] == 200
    status, member = await api.call("POST", "/members", {"email": "range@example.com"})
    m = member["member"]
    status, _ = await api.call(
        "GET", f"/members/{m}/history", params={"before": "99999999999999999999"}
    )
    assert status == 400
    till = await clients.pos(merchant)
    reply = await till.request({"type": "history", "member": m, "before": "9999999999999999999"})
    assert reply.code == "invalid_field"


async def test_an_expiry_run_expires_only_its_own_merchants_points(
    api: Api, http, rn, clients, pg_dsn
) -> None:
    """Found in review: merchant A's run expired every merchant's points, and with a
    ``now`` years ahead it emptied B's members whose points were not due for decades."""
    mine = api.base.rsplit("/", 1)[1]
    theirs = Api(http, rn.url, unique("mer"))
    assert (await theirs.call("PUT", body={"region": "US"}))[0] == 200
    other = theirs.base.rsplit("/", 1)[1]
    members = {}
    for merchant in (mine, other):
        await setup_db(
            pg_dsn, "UPDATE programmes SET expiry_days = 30 WHERE merchant_id = $1", merchant
        )
        members[merchant] = await member_with_points(await clients.pos(merchant), 10_000)
        await setup_db(
            pg_dsn,
            "UPDATE accounts SET updated_at = now() - interval '31 days' WHERE member_id = $1",
            members[merchant],
        )
    status, reply = await api.call("POST", "/expiry/run", {"now": "2100-01-01T00:00:00Z"})
    assert (status, reply["error"]) == (400, "invalid_field")
    assert await api.call("POST", "/expiry/run", {}) == (200, {"expired": 1})
    mine_after = (await api.call("GET", f"/members/{members[mine]}"))[1]["balance"]
    theirs_after = (await theirs.call("GET", f"/members/{members[other]}"))[1]["balance"]
    assert mine_after["posted"] == 0
    assert theirs_after["posted"] > 0  # the other merchant's due points wait for its own run


async def test_broadcast_refusals_carry_the_admin_apis_codes(http, rn) -> None:
    """Its 401 carried no message and its 400 said `invalid`: every refusal of the node's HTTP
    routes is now one shape (`error`, `message`) with the admin API's codes."""
    url = rn.url + "/admin/broadcast"
    async with http.post(url, json={"merchant": "m", "kind": "offer"}) as r:
        assert r.status == 401
        assert set(await r.json()) == {"error", "message"}
    for body in ({"merchant": "bad id!"}, {"merchant": "m", "payload": {"x": "y" * 70_000}}):
        async with http.post(url, json=body, headers=ADMIN) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "invalid_field"


def test_what_the_contract_check_reads_is_what_the_document_says() -> None:
    doc = openapi.build()
    for (method, path), answers in openapi._OPS_ANSWERS.items():
        assert set(doc["paths"][path][method.lower()]["responses"]) == {str(s) for s in answers}
