"""The catalogue's routes keep merchants apart (another merchant's token, an unknown merchant:
404 on every route), removing a product, and the sale path: a line without a category earns
by its SKU's category in the catalogue (a category rule, a promotion of a category); a line's
own category wins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.merchant_keys import MerchantKeys
from tests.catalogue.support import CSV, base, get, jsonl, products_of, put_import, row
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import ADMIN, admin, enrol, new_merchant, ok, phone
from tests.support import RunningNode, running_node, settings_for

ADMIN_A = "admin-token-of-merchant-a-" + "x" * 20
ADMIN_B = "admin-token-of-merchant-b-" + "y" * 20


@pytest.fixture
async def two(pg_dsn: str) -> tuple[str, str]:
    return await new_merchant(pg_dsn), await new_merchant(pg_dsn)


@pytest.fixture
async def keyed(pg_dsn: str, redis_prefix: str, two: tuple[str, str]) -> AsyncIterator[RunningNode]:
    a, b = two
    keys = MerchantKeys.parse(
        {a: {"admin_tokens": [ADMIN_A]}, b: {"admin_tokens": [ADMIN_B]}}, "dev-admin-token"
    )
    s = settings_for(pg_dsn, REDIS_URL, "cat-keys")
    async with running_node(
        replace(s, auth=replace(s.auth, merchant_keys=keys)), redis_prefix
    ) as n:
        yield n


async def test_every_catalogue_route_refuses_another_merchants_token(
    http, keyed: RunningNode, two: tuple[str, str], pg_dsn
):
    a, b = two
    own_a = {"Authorization": f"Bearer {ADMIN_A}"}
    own_b = {"Authorization": f"Bearer {ADMIN_B}"}
    status, report = await put_import(http, keyed.url, a, "a-1", jsonl(row("a-sku")), headers=own_a)
    assert (status, report["created"]) == (200, 1)
    ghost = unique("mer")
    for target, headers in ((a, own_b), (ghost, own_a), (ghost, ADMIN)):
        url = base(keyed.url, target)
        calls = [
            ("PUT", f"{url}/imports/a-1", jsonl(row("b-sku"))),
            ("PUT", f"{url}/imports/a-2", b"sku,name,price\nb-sku,B,1\n"),
            ("GET", f"{url}/imports/a-1", None),
            ("GET", f"{url}/products", None),
            ("GET", f"{url}/products?category=x", None),
            ("GET", f"{url}/products/a-sku", None),
            ("DELETE", f"{url}/products/a-sku", None),
        ]
        for method, u, body in calls:
            h = {**headers, "Content-Type": CSV if body and body.startswith(b"sku") else
                 "application/x-ndjson"}  # fmt: skip
            async with http.request(method, u, data=body, headers=h) as resp:
                reply = await resp.json()
                assert (resp.status, reply["error"]) == (404, "not_found"), (method, u, target)
    # nothing of a's was read or changed, and b's catalogue got nothing
    assert [r["sku"] for r in await products_of(pg_dsn, a)] == ["a-sku"]
    assert await products_of(pg_dsn, b) == []
    # b's own token reaches b's catalogue only: a's import id is unknown there
    assert (await get(http, f"{base(keyed.url, b)}/imports/a-1", own_b))[0] == 404
    assert (await get(http, f"{base(keyed.url, b)}/products/a-sku", own_b))[0] == 404
    status, page = await get(http, f"{base(keyed.url, b)}/products", own_b)
    assert (status, page["products"]) == (200, [])
    async with http.get(f"{base(keyed.url, a)}/products", headers={}) as resp:
        assert resp.status == 401


async def test_removing_a_product(http, rn, merchant):
    status, _ = await put_import(http, rn.url, merchant, "r", jsonl(row("gone"), row("kept")))
    assert status == 200
    url = f"{base(rn.url, merchant)}/products"
    status, reply = await admin(http, "DELETE", f"{url}/gone")
    assert (status, reply) == (200, {"deleted": "gone"})
    status, reply = await admin(http, "DELETE", f"{url}/gone")
    assert (status, reply["error"]) == (404, "not_found")
    _, page = await get(http, url)
    assert [p["sku"] for p in page["products"]] == ["kept"]


# ----------------------------------------------------------------------------- earning


async def _category_rule(http, rn, merchant: str, category: str, multiplier: str) -> None:
    status, reply = await admin(
        http,
        "PUT",
        f"{rn.url}/admin/v1/merchants/{merchant}/rules/r-{category}",
        json={"kind": "category", "category": category, "multiplier": multiplier},
    )
    assert status == 200, reply


async def test_a_line_without_category_earns_by_the_catalogues(http, rn, clients, merchant):
    await _category_rule(http, rn, merchant, "tea", "3")
    await _category_rule(http, rn, merchant, "gift", "2")
    body = jsonl(row("green-tea", category="tea"), row("plain", price=500))
    assert (await put_import(http, rn.url, merchant, "e", body))[0] == 200
    till = await clients.pos(merchant)
    member = str((await enrol(till, phone=phone())).member)

    async def sale(*lines: dict[str, object]) -> dict[str, int]:
        total = sum(int(ln["price"]) * int(ln.get("qty", 1)) for ln in lines)  # type: ignore[call-overload]
        frame = {"type": "sale", "op": unique("s"), "member": member, "total": total,
                 "lines": [{"qty": 1, **ln} for ln in lines]}  # fmt: skip
        receipt = await ok(till, frame)
        return {b.rule: b.points for b in receipt.breakdown}

    # $10.00 of tea without a category of its own: 10 base, x3 by the catalogue's category
    assert await sale({"sku": "green-tea", "price": 1000}) == {"base": 10, "category:tea": 20}
    # the line's own category wins over the catalogue's
    got = await sale({"sku": "green-tea", "price": 1000, "category": "gift"})
    assert got == {"base": 10, "category:gift": 10}
    # a product without a category, an unknown SKU: base only
    assert await sale({"sku": "plain", "price": 1000}, {"sku": "nope", "price": 1000}) == {
        "base": 20
    }
    # several lines, mixed
    got = await sale(
        {"sku": "green-tea", "price": 1000},
        {"sku": "green-tea", "price": 2000, "category": "gift"},
        {"sku": "nope", "price": 1000},
    )
    assert got == {"base": 40, "category:tea": 20, "category:gift": 20}
    # a new import is seen by the next sale; a removed product no more
    status, _ = await put_import(http, rn.url, merchant, "e2", jsonl(row("plain", category="gift")))
    assert status == 200
    assert await sale({"sku": "plain", "price": 1000}) == {"base": 10, "category:gift": 10}
    assert (await admin(http, "DELETE", f"{base(rn.url, merchant)}/products/green-tea"))[0] == 200
    assert await sale({"sku": "green-tea", "price": 1000}) == {"base": 10}


async def test_another_merchants_catalogue_does_not_earn(http, rn, clients, merchant, pg_dsn):
    other = await new_merchant(pg_dsn)
    await _category_rule(http, rn, merchant, "tea", "3")
    assert (await put_import(http, rn.url, other, "o", jsonl(row("t", category="tea"))))[0] == 200
    till = await clients.pos(merchant)
    member = str((await enrol(till, phone=phone())).member)
    frame = {"type": "sale", "op": unique("s"), "member": member, "total": 1000,
             "lines": [{"sku": "t", "qty": 1, "price": 1000}]}  # fmt: skip
    receipt = await ok(till, frame)
    assert {b.rule: b.points for b in receipt.breakdown} == {"base": 10}


async def test_a_promotion_of_a_category_applies_to_a_line_by_the_catalogues(
    http, rn, clients, merchant
):
    status, reply = await admin(
        http,
        "PUT",
        f"{rn.url}/admin/v1/merchants/{merchant}/rules/promo-tea",
        json={"kind": "promotion", "category": "tea", "bonus": 50},
    )
    assert status == 200, reply
    status, _ = await put_import(http, rn.url, merchant, "p", jsonl(row("oolong", category="tea")))
    assert status == 200
    till = await clients.pos(merchant)
    member = str((await enrol(till, phone=phone())).member)
    got = {}
    for sku in ("oolong", "coffee"):
        frame = {"type": "sale", "op": unique("s"), "member": member, "total": 1000,
                 "lines": [{"sku": sku, "qty": 1, "price": 1000}]}  # fmt: skip
        receipt = await ok(till, frame)
        got[sku] = {b.rule: b.points for b in receipt.breakdown}
    assert got == {"oolong": {"base": 10, "promo:promo-tea": 50}, "coffee": {"base": 10}}
