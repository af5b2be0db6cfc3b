"""The signed cart link of a reminder: its reorder page shows the product and the incentive
and links on to the shop's pre-filled cart (the loop's cart_url template, values quoted);
every opening is recorded; an altered, forged, expired or other kind of token is refused with
a page that says why; a bad cart_url template is refused when the loop is saved."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from urllib.parse import urlsplit

from gateway.reorder import LinkSigner
from tests.loyalty_support import admin
from tests.reorder.support import fetch, product
from tests.reorder.test_outbox import MESSAGE, put_loop, shopper
from tests.support import pos_token

NOW = datetime.now(UTC).replace(microsecond=0)
CART = "https://shop.example.com/cart?add={sku}&qty={qty}&ref={reminder}&m={member}"


async def test_the_page_hands_off_to_the_shops_cart_and_records_clicks(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans:1kg", 30)
    till = await clients.pos(merchant)
    m, _, _ = await shopper(till, pg_dsn, merchant, sku="beans:1kg")
    await put_loop(http, rn, merchant, products=["beans:1kg"], cart_url=CART)
    assert (await rn.node.reorder.run(NOW)).outbox.sent == 1
    text = smtp.messages[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = next(w for w in text.split() if "/reorder/" in w)
    path = urlsplit(link).path
    (reminder,) = await fetch(
        pg_dsn, "SELECT id FROM reorder_reminders WHERE merchant_id = $1", merchant
    )
    for _ in range(2):
        async with http.get(rn.url + path, headers={"User-Agent": "Mail/1.0"}) as r:
            assert r.status == 200
            body = await r.text()
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["Cache-Control"] == "no-store"
    assert "Reorder Product beans:1kg" in body
    assert "get 200 bonus points" in body
    shop = f"https://shop.example.com/cart?add=beans%3A1kg&qty=1&ref={reminder['id']}&m={m}"
    assert f'href="{html.escape(shop)}"' in body
    clicks = await fetch(
        pg_dsn,
        "SELECT reminder_id, member_id, sku, user_agent FROM reorder_clicks WHERE merchant_id = $1",
        merchant,
    )
    assert [tuple(c) for c in clicks] == [(reminder["id"], m, "beans:1kg", "Mail/1.0")] * 2


async def test_altered_forged_expired_or_other_tokens_are_refused(http, rn, merchant):
    secret = rn.node.settings.auth.jwt_secret
    good = LinkSigner(secret, rn.url).cart(merchant, "m-1", "beans", 1, 3600)
    token = urlsplit(good).path.rsplit("/", 1)[1]
    head, body, sig = token.split(".")
    cases = {
        f"{head}.{body}.{sig[::-1]}": (400, "not valid"),
        f"{head}.{body[:-2]}{'AA' if body[-2:] != 'AA' else 'BB'}.{sig}": (400, "not valid"),
        urlsplit(
            LinkSigner("another-secret-" + "x" * 32, rn.url).cart(merchant, "m-1", "b", 1, 60)
        ).path.rsplit("/", 1)[1]: (400, "not valid"),
        urlsplit(LinkSigner(secret, rn.url).cart(merchant, "m-1", "beans", 1, -10)).path.rsplit(
            "/", 1
        )[1]: (410, "expired"),
        urlsplit(LinkSigner(secret, rn.url).unsubscribe(merchant, "m-1", "email", 1)).path.rsplit(
            "/", 1
        )[1]: (400, "not valid"),
        pos_token(merchant): (400, "not valid"),  # a session token is no link
        "garbage": (400, "not valid"),
    }
    for bad, (status, says) in cases.items():
        async with http.get(f"{rn.url}/reorder/{bad}") as r:
            assert (r.status, says in await r.text()) == (status, True), bad
    # the good one opens (its reminder does not exist: the page, no shop link)
    async with http.get(f"{rn.url}/reorder/{token}") as r:
        assert r.status == 200 and "Continue to the shop" not in await r.text()


async def test_a_bad_cart_url_is_refused_at_save(http, rn, merchant, pg_dsn):
    await product(pg_dsn, merchant, "beans", 30)
    url = f"{rn.url}/admin/v1/merchants/{merchant}/reorder-loops/carts"
    base = {"products": ["beans"], "messages": [MESSAGE]}
    for bad in (
        "https://shop.example.com/?x={sku!r}",
        "https://shop.example.com/?x={qty:>9}",
        "https://shop.example.com/?x={nope}",
        "https://shop.example.com/?x={",
        "ftp://shop.example.com/{sku}",
        "javascript:alert(1)//{sku}",
        "/relative/{sku}",
    ):
        status, reply = await admin(http, "PUT", url, json={**base, "cart_url": bad})
        assert (status, reply["error"]) == (400, "invalid_field"), bad
    assert (await admin(http, "GET", url))[0] == 404
    status, made = await admin(http, "PUT", url, json={**base, "cart_url": CART})
    assert status == 200 and made["spec"]["cart_url"] == CART
