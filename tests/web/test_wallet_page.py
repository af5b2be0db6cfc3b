"""The wallet page and the cashier console in a real browser (Debian's chromium, headless),
embedded by a shop on its own origin that hands them their tokens: a sale at a register on
one node shows on the wallet page served by another, a redemption on the page shows on the
console, a killed node's page reconnects to the other and converges, and a member's name that
holds markup is shown as text."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from playwright.async_api import expect

from protocol.messages import Result
from tests.conftest import REDIS_URL, unique
from tests.live_support import pos
from tests.loyalty_support import add_reward, enrol, ok, phone
from tests.support import NodeProcess, app_token, free_port, pos_token
from tests.web.page_support import page_env, shows_balance, tab, text

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


async def test_a_sale_on_one_node_shows_on_the_wallet_page_served_by_another(
    nodes, shop, browser, merchant, http: aiohttp.ClientSession
):
    a, b = nodes
    till = await pos(http, a.url, merchant)
    m = (await enrol(till, phone=phone(), name="Ada")).member
    async with tab(browser) as t:
        wallet = await t.open(shop.embed("w", f"{b.url}/wallet", lambda: app_token(merchant, m)))
        assert await text(wallet, "#who") == "Ada"
        await shows_balance(wallet, "#balance", 0)
        for total in (1_000, 2_500):
            reply = await till.request(
                {"type": "sale", "op": unique("op"), "member": m, "total": total}
            )
            assert isinstance(reply, Result)
            await shows_balance(wallet, "#balance", reply.data.balance.available)
        await expect(wallet.locator("#history li[data-op]")).to_have_count(2)
        # the pass the page shows is the one the register scans: it finds the member
        assert await wallet.locator("#pass img.qr").count() == 1
        assert shop.token_requests >= 1
    await till.close()


async def test_redeeming_on_the_page_shows_on_the_console(
    nodes, shop, browser, merchant, pg_dsn, http: aiohttp.ClientSession
):
    a, b = nodes
    await add_reward(pg_dsn, merchant, "ten-off", 500, 1_000, "$10 off")
    till = await pos(http, a.url, merchant, "t9")
    number = phone()
    m = (await enrol(till, phone=number, name="Grace")).member
    await ok(
        till, {"type": "sale", "op": unique("op"), "member": m, "total": 120_000}
    )  # 1,200 points
    async with tab(browser) as t1, tab(browser) as t2:
        console = await t1.open(shop.embed("c", f"{a.url}/console", lambda: pos_token(merchant)))
        await console.fill("#c-find", number)
        await console.press("#c-find", "Enter")
        await shows_balance(console, "#c-balance", 1_200)
        assert await text(console, "#c-name") == "Grace"
        wallet = await t2.open(shop.embed("w", f"{b.url}/wallet", lambda: app_token(merchant, m)))
        await wallet.click('#rewards li[data-reward="ten-off"] button')
        await wallet.wait_for_selector('#codes li[data-status="issued"] img.qr')
        code = await wallet.get_attribute('#codes li[data-status="issued"]', "data-code")
        # the console sees the points go and the new code, without anyone touching it
        await shows_balance(console, "#c-balance", 700)
        await console.wait_for_selector(f'#c-codes li[data-code="{code}"]')
        # the cashier applies it; the wallet shows it used
        await console.click(f'#c-codes li[data-code="{code}"] button')
        await wallet.wait_for_selector(f'#codes li[data-code="{code}"][data-status="redeemed"]')
    await till.close()


async def test_markup_in_a_members_name_is_shown_as_text(
    nodes, shop, browser, merchant, http: aiohttp.ClientSession
):
    a, b = nodes
    till = await pos(http, a.url, merchant)
    number = phone()
    m = (await enrol(till, phone=number, name=HOSTILE)).member
    async with tab(browser) as t1, tab(browser) as t2:
        wallet = await t1.open(shop.embed("w", f"{b.url}/wallet", lambda: app_token(merchant, m)))
        assert await text(wallet, "#who") == HOSTILE
        console = await t2.open(shop.embed("c", f"{a.url}/console", lambda: pos_token(merchant)))
        await console.fill("#c-find", number)
        await console.press("#c-find", "Enter")
        await console.wait_for_selector("#c-name")
        assert await text(console, "#c-name") == HOSTILE
        for f in (wallet, console):
            assert await f.evaluate("window.__pwned") is None
            assert await f.locator("#who script, #c-member script, img[src='x']").count() == 0
    await till.close()


async def test_a_killed_node_s_page_reconnects_to_the_other_and_converges(
    pg_dsn, redis_prefix, shop, browser, merchant, http: aiohttp.ClientSession
):
    pa, pb = free_port(), free_port()
    a = NodeProcess(pg_dsn, REDIS_URL, redis_prefix, "kill-a", page_env(pa, [pb], shop.origin), pa)
    b = NodeProcess(pg_dsn, REDIS_URL, redis_prefix, "kill-b", page_env(pb, [pa], shop.origin), pb)
    try:
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        till = await pos(http, a.url, merchant)
        m = (await enrol(till, phone=phone(), name="Lin")).member
        async with tab(browser) as t:
            wallet = await t.open(
                shop.embed("w", f"{b.url}/wallet", lambda: app_token(merchant, m))
            )
            b.kill()
            await wallet.wait_for_selector('body[data-state="reconnecting"]', timeout=10_000)
            # meanwhile sales go on at the register
            last: Any = None
            for _ in range(3):
                last = await ok(
                    till, {"type": "sale", "op": unique("op"), "member": m, "total": 700}
                )
            await wallet.wait_for_selector('body[data-state="live"]', timeout=20_000)
            await shows_balance(wallet, "#balance", last.balance.available)
            await expect(wallet.locator("#history li[data-op]")).to_have_count(3)
            # and it stays live on node A
            again = await ok(till, {"type": "sale", "op": unique("op"), "member": m, "total": 300})
            await shows_balance(wallet, "#balance", again.balance.available)
            # the page's console shows the lost connection: that is expected here
            t.problems = [p for p in t.problems if "WebSocket" not in p and "ERR_" not in p]
        await till.close()
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.kill()
