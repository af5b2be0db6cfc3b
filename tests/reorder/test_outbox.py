"""Reminder messages through the outbox, end to end: a due reminder's message rendered from
the loop's templates, sent once by email (a real SMTP server) with the one-click unsubscribe
headers of RFC 8058, or by SMS (a real HTTP receiver) with its idempotency key; never without
consent (when made and when sent); retries after an SMTP 4xx and an HTTP 500, a permanent
failure after an SMTP 5xx; an interrupted send never repeated; two nodes' outboxes at once
send each message once; the unsubscribe link withdraws the consent at once; quiet hours, the
cap across loops and the control group."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from gateway.reorder import Outbox, control_point
from gateway.settings import NotifySettings
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import admin, enrol, new_merchant, ok, phone, setup_db
from tests.reorder.support import buy, fetch, product
from tests.support import running_node, settings_for

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


MESSAGE = {
    "subject": "Your {{ product }} is running low",
    "text": "Hi {{ name }}, reorder: {{ link }}{% if incentive %} (+{{ incentive }}){% endif %}",
    "html": "<p>Hi {{ name }}, <a href='{{ link }}'>reorder</a></p>",
}


async def put_loop(http: Any, rn: Any, merchant: str, loop: str = "l1", **over: Any) -> None:
    body: dict[str, Any] = {
        "products": ["beans"],
        "lead_days": 3,
        "messages": [MESSAGE],
        "incentive": {"kind": "points", "points": 200},
        "channels": ["email"],
        "control_share": 0.0,
        **over,
    }
    status, reply = await admin(
        http, "PUT", f"{rn.url}/admin/v1/merchants/{merchant}/reorder-loops/{loop}", json=body
    )
    assert status == 200, reply


async def shopper(
    till: Any,
    pg_dsn: str,
    merchant: str,
    *,
    mail: bool = True,
    sms: bool = False,
    name: str = "Ada <b>",
    sku: str = "beans",
    days_ago: float = 28,
) -> tuple[str, str, str]:
    """A member with an email address and a phone, the consents given, who bought one
    ``sku`` ``days_ago`` (with a 30-day cycle and 3 lead days: due a day ago)."""
    address = f"{unique('ada')}@example.com"
    number = phone()
    m = str((await enrol(till, phone=number, email=address)).member)
    await ok(
        till,
        {
            "type": "update_profile",
            "member": m,
            "name": name,
            "consent": {"email": mail, "sms": sms},
        },
    )
    await buy(till, pg_dsn, f"{merchant}-{m}-{sku}", m, ago(days_ago), **{sku: 1})
    return m, address, number


async def consent(pg_dsn: str, member: str) -> tuple[bool, str]:
    (r,) = await fetch(
        pg_dsn,
        "SELECT consent_email, consent_email_source FROM member_profiles WHERE member_id = $1",
        member,
    )
    return r["consent_email"], r["consent_email_source"]


async def messages(pg_dsn: str, merchant: str) -> list[dict[str, Any]]:
    rows = await fetch(
        pg_dsn,
        """SELECT id, delivery_id, member_id, loop_id, sku, step, channel, to_address, subject,
                  body_text, state, attempts, next_attempt_at, last_error, unsubscribed_at
             FROM reorder_messages WHERE merchant_id = $1 ORDER BY id""",
        merchant,
    )
    return [dict(r) for r in rows]


async def test_an_email_is_rendered_sent_once_with_one_click_unsubscribe(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    m, address, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant)
    done = await rn.node.reorder.run(NOW)
    assert (done.dispatch.made, done.outbox.sent) == (1, 1)
    (mail,) = smtp.messages
    assert mail["To"] == address and mail["From"] == "shop@example.com"
    assert mail["Subject"] == "Your Product beans is running low"
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hi Ada <b>, reorder: http://127.0.0.1:8080/reorder/" in text
    assert "(+200 bonus points)" in text
    assert "Hi Ada &lt;b&gt;," in html  # autoescaped in the HTML part only
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("http://127.0.0.1:8080/reorder/unsubscribe/")
    assert mail["Message-ID"].startswith("<reorder.")
    (row,) = await messages(pg_dsn, merchant)
    assert (row["state"], row["attempts"], row["channel"], row["member_id"]) == (
        "sent",
        1,
        "email",
        m,
    )
    # nothing again, however many passes
    for _ in range(3):
        again = await rn.node.reorder.run(NOW + timedelta(hours=1))
        assert (again.dispatch.made, again.outbox.sent) == (0, 0)
    assert len(smtp.messages) == 1
    # the one-click unsubscribe: a GET changes nothing, the POST withdraws the consent
    path = urlsplit(unsubscribe).path
    async with http.get(rn.url + path) as r:
        assert r.status == 200 and "Unsubscribe" in await r.text()
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert await consent(pg_dsn, m) == (True, "pos")
    async with http.post(rn.url + path, data="List-Unsubscribe=One-Click") as r:
        assert r.status == 200 and "unsubscribed" in await r.text()
    assert await consent(pg_dsn, m) == (False, "unsubscribe")
    assert (await messages(pg_dsn, merchant))[0]["unsubscribed_at"] is not None
    # an altered or forged link is refused with a page that says so, and changes nothing
    token = path.rsplit("/", 1)[1]
    head, body, sig = token.split(".")
    for bad in (f"{head}.{body}.{sig[:-2]}AA", "not-a-token", f"{head}.{body[:-1]}x.{sig}"):
        async with http.post(f"{rn.url}/reorder/unsubscribe/{bad}") as r:
            assert r.status == 400 and "not valid" in await r.text()


async def test_no_message_without_consent_when_made_or_when_sent(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    never, _, _ = await shopper(till, pg_dsn, merchant, mail=False)
    later, _, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant)
    await rn.node.reorder.predictor.run()
    await rn.node.reorder.scheduler.run(NOW, merchant)
    made = await rn.node.reorder.dispatcher.run(NOW, merchant)
    assert (made.made, made.skipped) == (1, 1)
    # the second withdraws its consent after its message was made, before it is sent
    await ok(till, {"type": "update_profile", "member": later, "consent": {"email": False}})
    sent = await rn.node.reorder.outbox.run(NOW)
    assert (sent.sent, sent.skipped) == (0, 1)
    assert smtp.tried == 0
    rows = {r["member_id"]: r for r in await messages(pg_dsn, merchant)}
    assert rows[never]["state"] == "skipped" and rows[never]["to_address"] == ""
    assert rows[later]["state"] == "skipped" and "when sent" in rows[later]["last_error"]


async def test_sms_with_its_key_and_a_retry_after_the_provider_answers_500(
    http, rn, clients, merchant, pg_dsn, sms
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    # no email consent, SMS consent: the second channel of the loop's preference
    _, _, number = await shopper(till, pg_dsn, merchant, mail=False, sms=True)
    await put_loop(http, rn, merchant, channels=["email", "sms"])
    sms.status = 500
    first = await rn.node.reorder.run(NOW)
    assert (first.outbox.sent, first.outbox.retrying) == (0, 1)
    (row,) = await messages(pg_dsn, merchant)
    assert (row["channel"], row["state"], row["attempts"]) == ("sms", "pending", 1)
    assert "500" in row["last_error"]
    assert row["next_attempt_at"] > NOW + timedelta(seconds=20)  # backed off
    assert (await rn.node.reorder.outbox.run(NOW)).sent == 0  # not before its time
    sms.status = 200
    second = await rn.node.reorder.outbox.run(NOW + timedelta(minutes=5))
    assert second.sent == 1
    assert len(sms.received) == 2  # the refused attempt and the delivered one
    for headers, body in sms.received:
        assert headers["Idempotency-Key"] == row["delivery_id"]
        assert headers["Authorization"] == "Bearer k"
        assert isinstance(body, dict) and body["to"].replace(" ", "")[-4:] == number[-4:]
        assert "Hi Ada <b>, reorder: http://127.0.0.1:8080/reorder/" in body["text"]
    assert (await messages(pg_dsn, merchant))[0]["state"] == "sent"
    assert (await rn.node.reorder.outbox.run(NOW + timedelta(hours=5))).sent == 0


async def test_smtp_4xx_is_retried_and_5xx_fails_for_good(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant)
    smtp.replies.extend(["451 4.3.0 try again later", "451 4.3.0 try again later"])
    done = await rn.node.reorder.run(NOW)
    assert done.outbox.retrying == 1
    assert (await rn.node.reorder.outbox.run(NOW + timedelta(minutes=2))).retrying == 1
    assert (await rn.node.reorder.outbox.run(NOW + timedelta(minutes=10))).sent == 1
    (row,) = await messages(pg_dsn, merchant)
    assert (row["state"], row["attempts"], len(smtp.messages)) == ("sent", 3, 1)
    # another member's mail is refused for good: one attempt, failed, never again
    other = await new_merchant(pg_dsn)
    await product(pg_dsn, other, "beans", 30)
    till2 = await clients.pos(other)
    await shopper(till2, pg_dsn, other)
    await put_loop(http, rn, other)
    smtp.replies.append("550 5.1.1 no such mailbox")
    assert (await rn.node.reorder.run(NOW)).outbox.failed == 1
    (failed,) = await messages(pg_dsn, other)
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    assert "550" in failed["last_error"]
    assert (await rn.node.reorder.outbox.run(NOW + timedelta(days=1))).sent == 0
    assert len(smtp.messages) == 1


async def test_retries_end_after_the_last_attempt_and_an_interrupted_send_is_not_repeated(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    await shopper(till, pg_dsn, merchant)
    await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant)
    await rn.node.reorder.predictor.run()
    await rn.node.reorder.scheduler.run(NOW, merchant)
    await rn.node.reorder.dispatcher.run(NOW, merchant)
    first, second = await messages(pg_dsn, merchant)
    # the first was claimed by a node that stopped mid-send: its lease ran out
    await setup_db(
        pg_dsn,
        """UPDATE reorder_messages SET state = 'sending', attempts = 1,
                  lease_until = now() - interval '1 second' WHERE id = $1""",
        first["id"],
    )
    outbox = Outbox(
        rn.node.pool,
        rn.node.profiles,
        rn.node.reorder.links,
        None,
        None,
        max_attempts=2,
    )
    assert (await outbox.run(NOW)).interrupted == 1
    smtp.replies.extend(["421 4.7.0 busy"] * 5)
    quick = Outbox(
        rn.node.pool,
        rn.node.profiles,
        rn.node.reorder.links,
        rn.node.reorder.outbox._smtp,
        None,
        max_attempts=2,
        backoff_seconds=0.001,
    )
    assert (await quick.run(NOW)).retrying == 1
    assert (await quick.run(NOW + timedelta(seconds=1))).failed == 1
    rows = {r["id"]: r for r in await messages(pg_dsn, merchant)}
    assert (
        rows[first["id"]]["state"] == "failed" and "interrupted" in rows[first["id"]]["last_error"]
    )
    assert (rows[second["id"]]["state"], rows[second["id"]]["attempts"]) == ("failed", 2)
    assert await rn.node.reorder.run(NOW + timedelta(days=1))
    assert smtp.messages == []


async def test_two_nodes_outboxes_send_each_message_once(
    http, rn, clients, merchant, pg_dsn, smtp, redis_prefix
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    members = [(await shopper(till, pg_dsn, merchant))[0] for _ in range(12)]
    await put_loop(http, rn, merchant)
    await rn.node.reorder.predictor.run()
    await rn.node.reorder.scheduler.run(NOW, merchant)
    s = settings_for(pg_dsn, REDIS_URL, "r2")
    s = replace(
        s,
        server=replace(s.server, reorder_seconds=0.0),
        notify=NotifySettings(smtp_url=smtp.url, mail_from="shop@example.com"),
    )
    async with running_node(s, redis_prefix) as other:
        passes = await asyncio.gather(
            rn.node.reorder.dispatcher.run(NOW, merchant),
            other.node.reorder.dispatcher.run(NOW, merchant),
            rn.node.reorder.dispatcher.run(NOW, merchant),
        )
        assert sum(p.made for p in passes) == 12
        sent = await asyncio.gather(
            rn.node.reorder.outbox.run(NOW),
            other.node.reorder.outbox.run(NOW),
            rn.node.reorder.outbox.run(NOW),
        )
    assert sum(p.sent for p in sent) == 12
    assert len(smtp.messages) == 12 == len(await messages(pg_dsn, merchant))
    assert len({m["To"] for m in smtp.messages}) == 12
    assert {r["member_id"] for r in await messages(pg_dsn, merchant)} == set(members)


async def test_quiet_hours_the_cap_across_loops_and_the_control_group(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans", 30)
    await product(pg_dsn, merchant, "filters", 30)
    till = await clients.pos(merchant)
    # quiet from an hour ago to an hour from now, UTC (the members have no zone of their own)
    start, end = (NOW - timedelta(hours=1)).strftime("%H:%M"), (NOW + timedelta(hours=1))
    quiet = {"start": start, "end": end.strftime("%H:%M")}
    m, _, _ = await shopper(till, pg_dsn, merchant)
    await buy(till, pg_dsn, f"{merchant}-{m}-f", m, ago(28), filters=1)
    await put_loop(http, rn, merchant, "beans", quiet_hours=quiet)
    await put_loop(http, rn, merchant, "filters", products=["filters"], quiet_hours=quiet)
    first = await rn.node.reorder.run(NOW)
    assert (first.schedule.created, first.dispatch.waiting, first.dispatch.made) == (2, 2, 0)
    rows = await fetch(
        pg_dsn, "SELECT next_at FROM reorder_reminders WHERE merchant_id = $1", merchant
    )
    assert {r["next_at"] for r in rows} == {end.replace(second=0)}
    # at the end of the quiet hours: one message, the cap (1 in 7 days, across loops) holds
    # the other until a week after the first
    after = end.replace(second=0) + timedelta(minutes=1)
    second = await rn.node.reorder.run(after)
    assert (second.dispatch.made, second.dispatch.waiting, second.outbox.sent) == (1, 1, 1)
    held = await fetch(
        pg_dsn,
        "SELECT next_at FROM reorder_reminders WHERE merchant_id = $1 AND step = 0",
        merchant,
    )
    assert [r["next_at"] for r in held] == [after + timedelta(days=7)]
    week = after + timedelta(days=7, minutes=1)
    if quiet_now(quiet, week):
        week += timedelta(hours=2)
    assert (await rn.node.reorder.run(week)).outbox.sent == 1
    assert len(smtp.messages) == 2
    # the control group: no message, its steps advance the same
    other = await new_merchant(pg_dsn)
    await product(pg_dsn, other, "beans", 30)
    till2 = await clients.pos(other)
    people = [(await shopper(till2, pg_dsn, other))[0] for _ in range(10)]
    await put_loop(http, rn, other, "half", control_share=0.5)
    done = await rn.node.reorder.run(NOW)
    control = {p for p in people if control_point(other, "half", p) < 0.5}
    assert (done.dispatch.control, done.dispatch.made) == (len(control), 10 - len(control))
    assert {r["member_id"] for r in await messages(pg_dsn, other)} == set(people) - control
    steps = await fetch(
        pg_dsn, "SELECT step, state FROM reorder_reminders WHERE merchant_id = $1", other
    )
    assert {(r["step"], r["state"]) for r in steps} == {(1, "done")}


def quiet_now(quiet: dict[str, str], at: datetime) -> bool:
    t = at.strftime("%H:%M")
    s, e = quiet["start"], quiet["end"]
    return s <= t < e if s < e else (t >= s or t < e)


async def test_an_erasure_blanks_the_messages_and_ends_the_reminders(
    http, rn, clients, merchant, pg_dsn, smtp
):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    m, address, _ = await shopper(till, pg_dsn, merchant)
    await put_loop(http, rn, merchant, messages=[MESSAGE, {**MESSAGE, "spacing_days": 4}])
    assert (await rn.node.reorder.run(NOW)).outbox.sent == 1
    status, _ = await admin(http, "DELETE", f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}")
    assert status == 200
    (row,) = await messages(pg_dsn, merchant)
    assert (row["to_address"], row["subject"], row["body_text"], row["state"]) == (
        "",
        "",
        "",
        "sent",
    )
    (r,) = await fetch(pg_dsn, "SELECT state FROM reorder_reminders WHERE member_id = $1", m)
    assert r["state"] == "done"
    assert (await rn.node.reorder.run(NOW + timedelta(days=5))).outbox.sent == 0
    assert [x["To"] for x in smtp.messages] == [address]
