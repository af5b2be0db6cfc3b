"""The shopper's wallet on the websocket: the view in one request, then live; codes by status;
the profile; a new email or phone proven by a code sent through a real SMTP server or a real
HTTP SMS provider."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.settings import NotifySettings
from protocol.messages import BalanceChanged
from protocol.wallet import CodeChanged, ProfileChanged, Refetch
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import Clients, add_reward, enrol, err, next_push, ok, phone, setup_db
from tests.servers import HttpReceiver, SmtpServer
from tests.support import RunningNode, running_node, settings_for


@pytest.fixture
def smtp() -> Any:
    with SmtpServer() as server:
        yield server


@pytest.fixture
async def sms() -> AsyncIterator[HttpReceiver]:
    async with HttpReceiver() as server:
        yield server


@pytest.fixture
async def rn(pg_dsn: str, redis_prefix: str, smtp: SmtpServer, sms: HttpReceiver) -> Any:
    """A node that sends verification codes to the test's SMTP server and SMS receiver."""
    base = settings_for(pg_dsn, REDIS_URL, "wallet")
    settings = dataclasses.replace(
        base, notify=NotifySettings(smtp_url=smtp.url, sms_url=sms.url, sms_token="sms-key")
    )
    async with running_node(settings, redis_prefix) as node:
        yield node


async def shopper(clients: Clients, merchant: str, pg_dsn: str) -> tuple[Any, Any, str]:
    """A till, a member with 1,000 points and an app session of it."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone(), email=f"{unique('w')}@example.com", name="Ada")).member
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 100_000})
    return till, await clients.app(merchant, m), m


async def test_the_wallet_in_one_request_then_live(clients, merchant, pg_dsn, rn: RunningNode):
    await add_reward(pg_dsn, merchant, "ten-off", 500, 1000, "$10 off")
    await add_reward(pg_dsn, merchant, "big", 5000, 9000, "big one")
    till, app, m = await shopper(clients, merchant, pg_dsn)
    view = await ok(app, {"type": "wallet", "member": m})
    assert view.member.member == m and view.balance.available == 1000
    assert [(r.reward, r.affordable) for r in view.rewards] == [("ten-off", True), ("big", False)]
    assert view.codes.codes == [] and view.profile.name == "Ada"
    assert [p.total for p in view.history.purchases] == [100_000]
    assert view.subscribed
    # a sale at any register: the balance, pushed
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000})
    assert (await next_push(app, BalanceChanged)).available == 1010
    # a redemption: its code, pushed with the next seq
    code = await ok(
        app, {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "ten-off"}
    )
    pushed = await next_push(app, CodeChanged)
    assert pushed.code.code == code.code and pushed.code.status == "issued"
    assert pushed.seq == view.seq + 1
    # used at a register: pushed again
    await ok(till, {"type": "use_code", "op": unique("u"), "code": code.code})
    used = await next_push(app, CodeChanged)
    assert used.code.status == "redeemed" and used.seq == view.seq + 2
    # the profile changed at the till: pushed too
    await ok(till, {"type": "update_profile", "member": m, "name": "Ada L."})
    changed = await next_push(app, ProfileChanged)
    assert changed.profile.name == "Ada L." and changed.seq == view.seq + 3
    again = await ok(app, {"type": "wallet", "member": m})
    assert again.seq == view.seq + 3 and again.codes.codes[0].status == "redeemed"


async def test_codes_by_status_and_page(clients, merchant, pg_dsn, rn):
    await add_reward(pg_dsn, merchant, "one", 10, 100)
    till, app, m = await shopper(clients, merchant, pg_dsn)
    codes = []
    for _ in range(5):
        r = await ok(
            app, {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "one"}
        )
        codes.append(r.code)
    await ok(till, {"type": "use_code", "op": unique("u"), "code": codes[0]})
    await ok(till, {"type": "void_code", "op": unique("v"), "code": codes[1]})
    await setup_db(
        pg_dsn,
        "UPDATE reward_codes SET expires_at = now() - interval '1 day' WHERE code = $1",
        codes[2],
    )
    by = {
        s: [c.code for c in (await ok(app, {"type": "codes", "member": m, "status": s})).codes]
        for s in ("active", "used", "expired", "voided", "all")
    }
    assert by["active"] == [codes[4], codes[3]]
    assert (by["used"], by["voided"], by["expired"]) == ([codes[0]], [codes[1]], [codes[2]])
    assert by["all"] == codes[::-1]
    first = await ok(app, {"type": "codes", "member": m, "limit": 2})
    second = await ok(app, {"type": "codes", "member": m, "limit": 2, "before": first.next})
    last = await ok(app, {"type": "codes", "member": m, "limit": 2, "before": second.next})
    assert [c.code for c in first.codes + second.codes + last.codes] == codes[::-1]
    assert last.next is None


async def test_profile_edits_and_what_is_refused(clients, merchant, pg_dsn, rn):
    _, app, m = await shopper(clients, merchant, pg_dsn)
    done = await ok(
        app,
        {
            "type": "update_profile",
            "member": m,
            "birthday": {"month": 2, "day": 29},
            "consent": {"email": True},
            "preferred_store": "s7",
        },
    )
    assert (done.birthday.month, done.birthday.day, done.birthday.year) == (2, 29, None)
    assert done.consent.email.granted and done.consent.email.source == "app"
    assert done.consent.email.at > 0 and not done.consent.sms.granted
    assert done.preferred_store == "s7" and done.name == "Ada"
    refused = [
        ({"birthday": {"month": 2, "day": 31}}, "invalid_field"),
        ({"birthday": {"month": 2, "day": 29, "year": 2001}}, "invalid_field"),
        ({"birthday": {"month": 4, "day": 31}}, "invalid_field"),
        ({"birthday": {"month": 13, "day": 1}}, "invalid_field"),
        ({"birthday": {"month": 1, "day": 1, "year": 2099}}, "invalid_field"),
        ({"name": "x" * 201}, "invalid_field"),
        ({"name": "nul\x00"}, "invalid_field"),
        ({"nickname": "unknown field"}, "invalid_field"),
        ({"preferred_store": "s8", "clear_preferred_store": True}, "invalid_field"),
    ]
    for fields, code in refused:
        frame = {"type": "update_profile", "member": m, **fields}
        assert (await err(app, frame)).code == code, fields
    other = (await enrol(await clients.pos(merchant), phone=phone())).member
    assert (await err(app, {"type": "update_profile", "member": other, "name": "x"})).code == (
        "forbidden"
    )
    view = await ok(app, {"type": "wallet", "member": m})
    assert (view.profile.birthday.month, view.profile.birthday.day) == (2, 29)  # unchanged
    assert view.profile.preferred_store == "s7" and view.profile.name == "Ada"
    cleared = await ok(app, {"type": "update_profile", "member": m, "clear_preferred_store": True})
    assert cleared.preferred_store is None


async def test_a_new_email_is_the_members_once_proven(clients, merchant, pg_dsn, rn, smtp):
    till, app, m = await shopper(clients, merchant, pg_dsn)
    new = f"{unique('new')}@example.org"
    sent = await ok(app, {"type": "verify_contact", "member": m, "email": new})
    assert sent.contact == "email" and sent.to.endswith("@example.org") and "***" in sent.to
    await asyncio.sleep(0.1)
    (code,) = smtp.codes_to(new)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    frame = {"type": "confirm_contact", "member": m, "email": new}
    assert (await err(app, {**frame, "code": wrong})).code == "verification_failed"
    profile = await ok(app, {**frame, "code": code})
    assert profile.email == new
    # the same code again (a retry after a lost reply) answers as the first did; another fails
    assert await ok(app, {**frame, "code": code}) == profile
    assert (await err(app, {**frame, "code": wrong})).code == "verification_failed"
    assert (await ok(till, {"type": "lookup", "email": new})).member == m
    # the new address of someone else: told only once proven
    other = (await enrol(till, phone=phone(), email=f"{unique('o')}@example.org")).member
    other_app = await clients.app(merchant, other)
    await ok(other_app, {"type": "verify_contact", "member": other, "email": new})
    await asyncio.sleep(0.1)
    code2 = smtp.codes_to(new)[-1]
    taken = await err(
        other_app, {"type": "confirm_contact", "member": other, "email": new, "code": code2}
    )
    assert taken.code == "identity_in_use"


async def test_wrong_codes_spend_the_code(clients, merchant, pg_dsn, rn, smtp):
    _, app, m = await shopper(clients, merchant, pg_dsn)
    new = f"{unique('n')}@example.org"
    await ok(app, {"type": "verify_contact", "member": m, "email": new})
    await asyncio.sleep(0.1)
    (code,) = smtp.codes_to(new)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    frame = {"type": "confirm_contact", "member": m, "email": new}
    for _ in range(5):
        assert (await err(app, {**frame, "code": wrong})).code == "verification_failed"
    assert (await err(app, {**frame, "code": code})).code == "verification_failed"
    view = await ok(app, {"type": "wallet", "member": m})
    assert view.profile.email != new


async def test_a_new_phone_is_proven_by_sms(clients, merchant, pg_dsn, rn, sms):
    till, app, m = await shopper(clients, merchant, pg_dsn)
    number = phone()
    sent = await ok(app, {"type": "verify_contact", "member": m, "phone": number})
    assert sent.contact == "phone"
    ((headers, body),) = sms.received
    assert headers["Authorization"] == "Bearer sms-key"
    code = body["text"].split("code is ")[1][:6]
    profile = await ok(app, {"type": "confirm_contact", "member": m, "phone": number, "code": code})
    assert profile.phone == (await ok(till, {"type": "lookup", "phone": number})).phone
    assert (await ok(till, {"type": "lookup", "phone": number})).member == m


async def test_codes_are_sent_a_few_times_an_hour_at_most(clients, merchant, pg_dsn, rn, smtp):
    _, app, m = await shopper(clients, merchant, pg_dsn)
    new = f"{unique('r')}@example.org"
    for _ in range(5):
        await ok(app, {"type": "verify_contact", "member": m, "email": new})
    limited = await err(app, {"type": "verify_contact", "member": m, "email": new})
    assert limited.code == "rate_limited" and limited.retryable
    bad = await err(app, {"type": "verify_contact", "member": m, "email": "not-an-email"})
    assert bad.code == "identity_invalid"
    both = {"type": "verify_contact", "member": m, "email": new, "phone": phone()}
    assert (await err(app, both)).code == "invalid_field"


async def test_a_lost_member_events_connection_tells_watchers_to_refetch(
    clients, merchant, pg_dsn, rn
):
    _, app, m = await shopper(clients, merchant, pg_dsn)
    await ok(app, {"type": "wallet", "member": m})
    await rn.node.redis.client_kill_filter(_type="pubsub")
    refetch = await next_push(app, Refetch, timeout=10)
    assert refetch.member == m


async def test_a_web_shop_enrols_its_shopper_then_mints_the_app_token(
    clients, merchant, pg_dsn, rn, http: aiohttp.ClientSession
):
    """The self-enrolment flow (protocol/README.md): the web shop's back end, after its own
    login, enrols the shopper through the admin API with the merchant's admin token, then
    mints an app token for the member it got, which the web page uses."""
    from gateway import auth
    from tests.loyalty_support import ADMIN
    from tests.support import SECRET, WsClient

    email = f"{unique('shop')}@example.com"
    url = f"{rn.url}/admin/v1/merchants/{merchant}/members"
    async with http.post(url, json={"email": email, "name": "Web"}, headers=ADMIN) as resp:
        assert resp.status == 201
        member = (await resp.json())["member"]
    token = auth.mint_app(SECRET, merchant, member, 600, "web")
    page = await WsClient.connect(http, rn.url)
    await page.hello(token)
    view = await ok(page, {"type": "wallet", "member": member})
    assert view.profile.email == email and view.balance.available == 0
    await page.close()
