"""The cashier console and the wallet page's own controls in a real browser: the register
scans the pass and the code the wallet page draws, enrols a new shopper, pays with points
(reserve, then commit or release) and rings up a basket; the shopper edits the profile; and a
page that is not embedded gets its token from the shop's back end with the shop's own cookie."""

from __future__ import annotations

import dataclasses

import aiohttp
from playwright.async_api import expect

from gateway.settings import Settings
from tests.conftest import REDIS_URL, unique
from tests.live_support import pos
from tests.loyalty_support import add_reward, enrol, ok, phone
from tests.support import app_token, pos_token, running_node, settings_for
from tests.web.page_support import read_qr, shows_balance, tab, text


async def test_the_register_scans_the_pass_and_the_code_the_wallet_page_draws(
    nodes, shop, browser, merchant, pg_dsn, http: aiohttp.ClientSession
):
    a, b = nodes
    await add_reward(pg_dsn, merchant, "coffee", 200, 350, "A coffee")
    till = await pos(http, a.url, merchant)
    m = (await enrol(till, phone=phone(), name="Ines")).member
    await ok(till, {"type": "sale", "op": unique("op"), "member": m, "total": 50_000})
    async with tab(browser) as t1, tab(browser) as t2:
        wallet = await t1.open(shop.embed("w", f"{b.url}/wallet", lambda: app_token(merchant, m)))
        console = await t2.open(shop.embed("c", f"{a.url}/console", lambda: pos_token(merchant)))
        await wallet.wait_for_selector("#pass img.qr")
        scanned = await read_qr(wallet, "#pass img.qr")
        assert len(scanned) > 64  # the signed pass, not the member id
        # a scanner types what it reads, then Enter
        await console.fill("#c-find", scanned)
        await console.press("#c-find", "Enter")
        await shows_balance(console, "#c-balance", 500)
        assert await text(console, "#c-name") == "Ines"
        await wallet.click('#rewards li[data-reward="coffee"] button')
        img = '#codes li[data-status="issued"] img.qr'
        await wallet.wait_for_selector(img)
        code = await read_qr(wallet, img)
        assert code == await wallet.get_attribute('#codes li[data-status="issued"]', "data-code")
        await console.fill("#c-code", code)
        await console.press("#c-code", "Enter")
        await expect(console.locator("#c-notice")).to_contain_text(f"Code {code} applied")
        await wallet.wait_for_selector(f'#codes li[data-code="{code}"][data-status="redeemed"]')
        # a used code scanned again is refused, and the console says so
        await console.fill("#c-code", code)
        await console.press("#c-code", "Enter")
        await expect(console.locator('#c-notice[data-kind="error"]')).to_be_visible()
    await till.close()


async def test_the_console_enrols_pays_with_points_and_rings_up_a_basket(
    nodes, shop, browser, merchant, http: aiohttp.ClientSession
):
    a, b = nodes
    number = phone()
    async with tab(browser) as t:
        console = await t.open(shop.embed("c", f"{a.url}/console", lambda: pos_token(merchant)))
        assert "Store s1" in await text(console, "#c-where")
        await console.fill("#c-find", number)
        await console.press("#c-find", "Enter")
        await console.wait_for_selector("#c-enrol:not([hidden])")
        await console.fill("#c-enrol-name", "Noor")
        await console.click("#c-enrol-go")
        await shows_balance(console, "#c-balance", 0)
        assert await text(console, "#c-name") == "Noor"
        member = await console.get_attribute("body", "data-member")
        # a basket of two lines, then the sale: points come in
        for sku, price, qty in (("tea", "12.50", "2"), ("cake", "5.00", "1")):
            await console.fill("#c-sku", sku)
            await console.fill("#c-price", price)
            await console.fill("#c-qty", qty)
            await console.press("#c-price", "Enter")
        await expect(console.locator("#c-total")).to_contain_text("Total 30.00")
        await console.click("#c-sale")
        await shows_balance(console, "#c-balance", 30)
        await expect(console.locator("#c-recent li")).to_have_count(1)
        # pay 20 of them: reserve shows as held, commit spends them
        await console.fill("#c-points", "20")
        await console.click("#c-reserve")
        await shows_balance(console, "#c-balance", 10)
        await console.click("#c-commit")
        await expect(console.locator("#c-notice")).to_contain_text("paid with points")
        # a reservation released gives them back
        await console.fill("#c-points", "5")
        await console.click("#c-reserve")
        await shows_balance(console, "#c-balance", 5)
        await console.click("#c-release")
        await shows_balance(console, "#c-balance", 10)
    # the ledger agrees with what the console showed
    till = await pos(http, b.url, merchant)
    bal = await ok(till, {"type": "balance", "member": member})
    assert (bal.posted, bal.held, bal.available) == (10, 0, 10)
    await till.close()


async def test_the_shopper_edits_the_profile_on_the_wallet_page(
    nodes, shop, browser, merchant, http: aiohttp.ClientSession
):
    a, b = nodes
    till = await pos(http, a.url, merchant)
    m = (await enrol(till, phone=phone(), name="Old")).member
    async with tab(browser, timezone_id="Asia/Tokyo") as t:
        wallet = await t.open(shop.embed("w", f"{b.url}/wallet", lambda: app_token(merchant, m)))
        await wallet.fill("#p-name", "New Name")
        await wallet.fill("#p-month", "2")
        await wallet.fill("#p-day", "30")  # no such day: refused, nothing changes
        await wallet.click("#p-save")
        await expect(wallet.locator('#profile-notice[data-kind="error"]')).to_be_visible()
        await wallet.fill("#p-day", "29")
        await wallet.check("#p-consent-email")
        await wallet.click("#p-save")
        await expect(wallet.locator("#profile-notice")).to_have_text("Saved.")
        await expect(wallet.locator("#who")).to_have_text("New Name")
        # the birthday came with the browser's time zone: the reward begins at its midnight
        await expect(wallet.locator("#p-zone")).to_contain_text("Asia/Tokyo")
    view = await ok(till, {"type": "cashier_view", "member": m})
    assert view.member.name == "New Name"
    profile = await ok(
        await_app := await _app(http, a.url, merchant, m), {"type": "wallet", "member": m}
    )
    assert (profile.profile.birthday.month, profile.profile.birthday.day) == (2, 29)
    assert profile.profile.consent.email.granted is True
    assert profile.profile.time_zone == "Asia/Tokyo"
    await await_app.close()
    await till.close()


async def _app(http, url, merchant, member):
    from tests.live_support import app

    return await app(http, url, merchant, member)


async def test_a_page_not_embedded_gets_its_token_from_the_shops_back_end(
    pg_dsn, redis_prefix, shop, browser, merchant, http: aiohttp.ClientSession
):
    base = settings_for(pg_dsn, REDIS_URL, "tok")
    extra = Settings.from_env({"GATEWAY_PAGE_TOKEN_URL": f"{shop.url}/api/loyalty-token"})
    s = dataclasses.replace(base, web=extra.web)
    async with running_node(s, redis_prefix) as node:
        shop.cors.add(node.url)
        till = await pos(http, node.url, merchant)
        m = (await enrol(till, phone=phone(), name="Kofi")).member
        shop.embeds["kofi"] = ("", lambda: app_token(merchant, m))
        async with tab(browser) as t:
            await t.page.goto(f"{shop.url}/login/kofi")  # the shop's own login: its cookie
            await t.page.goto(f"{node.url}/wallet")  # no token anywhere in the URL
            await t.page.wait_for_selector('body[data-ready="1"][data-state="live"]')
            assert await t.page.text_content("#who") == "Kofi"
        # without the shop's login the page gets no token and says so
        async with tab(browser) as t:
            await t.page.goto(f"{node.url}/wallet")
            await expect(t.page.locator('#notice[data-kind="error"]')).to_contain_text("401")
            t.problems = [p for p in t.problems if "401" not in p]
        await till.close()
