"""The endpoints through the admin API: create, list, read, change, delete; URLs that are not
http(s) or point at a private address are refused (and nothing is stored), with the override
for local development; another merchant's token, an unknown merchant and another merchant's
endpoint answer 404 not_found on every route."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from gateway.settings import WebhookSettings
from gateway.webhooks import UrlRefused, address_allowed, check_url
from tests.loyalty_support import admin, new_merchant
from tests.support import running_node
from tests.webhooks.conftest import Receiver, hook_settings


def base(node: Any, merchant: str) -> str:
    return f"{node.url}/admin/v1/merchants/{merchant}/webhooks"


async def endpoints_of(pg_dsn: str, merchant: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1", merchant
            )
        )
    finally:
        await conn.close()


async def test_create_list_read_change_delete(http, wn, merchant, receiver: Receiver):
    url = base(wn, merchant)
    status, made = await admin(
        http, "POST", url, json={"url": receiver.at("/x"), "events": ["points.changed"]}
    )
    assert status == 201 and made["events"] == ["points.changed"]
    hook = made["id"]
    status, listed = await admin(http, "GET", url)
    assert status == 200 and [w["id"] for w in listed["webhooks"]] == [hook]
    assert "secret" not in listed["webhooks"][0]
    status, changed = await admin(
        http,
        "PATCH",
        f"{url}/{hook}",
        json={"events": ["tier.changed", "points.changed"], "description": "crm"},
    )
    assert status == 200, changed
    assert changed["events"] == ["points.changed", "tier.changed"] and changed["url"] == made["url"]
    status, read = await admin(http, "GET", f"{url}/{hook}")
    assert status == 200 and read["description"] == "crm"
    status, gone = await admin(http, "DELETE", f"{url}/{hook}")
    assert status == 200 and gone == {"deleted": hook}
    assert (await admin(http, "GET", f"{url}/{hook}"))[0] == 404
    assert (await admin(http, "DELETE", f"{url}/{hook}"))[0] == 404


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "https://user:pw@example.com/hook",
        "http://exa mple.com/",
        "http://example.com:99999/",
    ],
)
async def test_a_url_that_is_not_http_is_refused_and_nothing_stored(
    http, wn, merchant, pg_dsn, url
):
    status, reply = await admin(
        http, "POST", base(wn, merchant), json={"url": url, "events": ["points.changed"]}
    )
    assert status == 400 and reply["error"] == "invalid_field", reply
    assert "url" in reply["message"]
    assert await endpoints_of(pg_dsn, merchant) == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_private_loopback_and_link_local_addresses_are_not_allowed(address):
    assert not address_allowed(address)


def test_public_addresses_are_allowed():
    assert address_allowed("93.184.215.14") and address_allowed("2606:2800:21f:cb07::1")


async def test_private_urls_are_refused_without_the_override(
    http, rn, merchant, pg_dsn, receiver: Receiver
):
    """``rn`` is a node with the default settings (no GATEWAY_WEBHOOKS_ALLOW_PRIVATE)."""
    for url in (
        receiver.at("/x"),
        "http://localhost:8080/x",
        "http://10.0.0.5/x",
        "http://[::1]:9000/x",
        "http://169.254.169.254/latest/meta-data",
        "https://[fd12::1]/x",
    ):
        status, reply = await admin(
            http, "POST", base(rn, merchant), json={"url": url, "events": ["points.changed"]}
        )
        assert status == 400 and reply["error"] == "invalid_field", (url, reply)
        assert "GATEWAY_WEBHOOKS_ALLOW_PRIVATE" in reply["message"]
    assert await endpoints_of(pg_dsn, merchant) == 0


async def test_the_check_resolves_names_and_the_override_allows_them():
    with pytest.raises(UrlRefused):
        await check_url("http://localhost/x", allow_private=False)
    with pytest.raises(UrlRefused, match="does not resolve"):
        await check_url("http://no-such-host.invalid/x", allow_private=False)
    await check_url("http://localhost/x", allow_private=True)
    with pytest.raises(UrlRefused, match="scheme"):
        await check_url("gopher://localhost/x", allow_private=True)


async def test_bad_bodies_are_refused_and_change_nothing(
    http, wn, merchant, pg_dsn, receiver: Receiver
):
    url = base(wn, merchant)
    good = receiver.at("/x")
    for body in (
        {"url": good, "events": []},
        {"url": good, "events": ["points.exploded"]},
        {"url": good, "events": ["order.points_pending"]},  # not yet: its package has not landed
        {"url": good},
        {"events": ["points.changed"]},
        {"url": good, "events": ["points.changed"], "secret": "mine"},
        {"url": good, "events": ["points.changed"], "description": "x" * 201},
        {"url": 5, "events": ["points.changed"]},
    ):
        status, reply = await admin(http, "POST", url, json=body)
        assert status == 400 and reply["error"] == "invalid_field", (body, reply)
    assert await endpoints_of(pg_dsn, merchant) == 0
    status, made = await admin(http, "POST", url, json={"url": good, "events": ["code.used"]})
    assert status == 201
    for patch in ({"url": "ftp://x/"}, {"events": []}, {"events": ["nope"]}, {"x": 1}):
        status, reply = await admin(http, "PATCH", f"{url}/{made['id']}", json=patch)
        assert status == 400, (patch, reply)
    status, read = await admin(http, "GET", f"{url}/{made['id']}")
    assert read["url"] == good and read["events"] == ["code.used"]
    for q in ("state=lost", "limit=0", "limit=x", "after=-1"):
        status, reply = await admin(http, "GET", f"{url}/{made['id']}/deliveries?{q}")
        assert status == 400, (q, reply)
    status, reply = await admin(
        http, "POST", f"{url}/{made['id']}/rotate", json={"overlap_seconds": -1}
    )
    assert status == 400


async def test_another_merchants_token_and_endpoints_answer_404(
    http, pg_dsn, redis_prefix, receiver: Receiver
):
    """Merchant a's own admin token on b's routes, the operator's token on a merchant that does
    not exist, and b's path naming a's endpoint: 404 not_found on every route, nothing
    changed."""
    from tests.api.test_merchant_keys import ADMIN_A, _keys

    a, b = await new_merchant(pg_dsn), await new_merchant(pg_dsn)
    s = hook_settings(pg_dsn, "iso")
    s = replace(s, auth=replace(s.auth, merchant_keys=_keys(a, b)))
    async with running_node(s, redis_prefix) as node:
        own = {"Authorization": f"Bearer {ADMIN_A}"}
        async with http.post(
            base(node, a), headers=own, json={"url": receiver.at("/x"), "events": ["code.used"]}
        ) as resp:
            assert resp.status == 201, await resp.text()
            hook = (await resp.json())["id"]
        status, made_b = await admin(
            http, "POST", base(node, b), json={"url": receiver.at("/b"), "events": ["code.used"]}
        )
        assert status == 201
        routes = [
            ("POST", "", {"url": receiver.at("/y"), "events": ["code.used"]}),
            ("GET", "", None),
            ("GET", "/{hook}", None),
            ("PATCH", "/{hook}", {"description": "x"}),
            ("DELETE", "/{hook}", None),
            ("POST", "/{hook}/rotate", {}),
            ("GET", "/{hook}/deliveries", None),
            ("POST", "/{hook}/deliveries/1/replay", None),
            ("POST", "/{hook}/replay", None),
        ]
        for method, path, body in routes:
            # a's token on b's path (b's own endpoint named): not found
            async with http.request(
                method,
                base(node, b) + path.format(hook=made_b["id"]),
                headers=own,
                json=body,
            ) as resp:
                reply = await resp.json()
                assert resp.status == 404 and reply["error"] == "not_found", (method, path)
            # the operator's token on a merchant that does not exist
            status, reply = await admin(
                http, method, base(node, "no-such-merchant") + path.format(hook=hook), json=body
            )
            assert status == 404 and reply["error"] == "not_found", (method, path, reply)
            if path:
                # b's path naming a's endpoint
                status, reply = await admin(
                    http, method, base(node, b) + path.format(hook=hook), json=body
                )
                assert status == 404 and reply["error"] == "not_found", (method, path, reply)
        status, read = await admin(http, "GET", f"{base(node, a)}/{hook}")
        assert status == 200 and read["description"] == ""
        status, read = await admin(http, "GET", f"{base(node, b)}/{made_b['id']}")
        assert status == 200 and read["description"] == ""
        assert await endpoints_of(pg_dsn, a) == 1 and await endpoints_of(pg_dsn, b) == 1


async def test_a_merchant_has_at_most_16_endpoints(http, wn, merchant, receiver: Receiver):
    url = base(wn, merchant)
    body = {"url": receiver.at("/x"), "events": ["points.changed"]}
    results = await asyncio.gather(*(admin(http, "POST", url, json=body) for _ in range(18)))
    assert sorted(s for s, _ in results).count(201) == 16
    assert all(r["error"] == "invalid_field" for s, r in results if s != 201)


def test_the_settings_default_refuses_private_addresses():
    assert WebhookSettings().allow_private is False
    assert replace(WebhookSettings(), allow_private=True).allow_private


async def test_a_delivery_to_a_private_address_is_refused_when_it_connects(
    http, pg_dsn, redis_prefix, merchant, receiver: Receiver
):
    """An endpoint whose URL was accepted (here written straight to its table: a name that
    resolved to a public address then) but now points at loopback is not connected to: the
    delivery's client re-checks the address, by IP literal and through its resolver."""
    from tests.loyalty_support import Clients, enrol, ok, phone

    conn = await asyncpg.connect(pg_dsn)
    try:
        for hook, url in (("we_literal", receiver.at("/lit")), ("we_name", receiver.at("/name"))):
            if hook == "we_name":
                url = url.replace("127.0.0.1", "localhost")
            await conn.execute(
                """INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret)
                   VALUES ($1, $2, $3, '{points.changed}', 'whsec_x')""",
                hook + merchant[-6:],
                merchant,
                url,
            )
    finally:
        await conn.close()
    s = hook_settings(pg_dsn, "strict", allow_private=False, retry_seconds=0.0)
    async with running_node(s, redis_prefix) as node:
        c = Clients(http, node.url)
        try:
            till = await c.pos(merchant)
            m = (await enrol(till, phone=phone())).member
            await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 1000})
            conn = await asyncpg.connect(pg_dsn)
            try:
                for _ in range(100):
                    rows = await conn.fetch(
                        """SELECT state, last_error FROM webhook_deliveries
                            WHERE merchant_id = $1 ORDER BY endpoint_id""",
                        merchant,
                    )
                    if len(rows) == 2 and all(r["state"] == "failed" for r in rows):
                        break
                    await asyncio.sleep(0.05)
            finally:
                await conn.close()
            assert [r["state"] for r in rows] == ["failed", "failed"], rows
            assert all("public" in r["last_error"] for r in rows), rows
            assert receiver.got == []
        finally:
            await c.close()
