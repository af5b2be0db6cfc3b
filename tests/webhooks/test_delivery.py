"""Webhooks delivered to a real local receiver: every points change of a member (a sale, a
redemption) as a points.changed event, signed (the guide's snippet verifies it and refuses a
forged body, a wrong secret and an old timestamp), with its event id in the header and body;
only to the endpoints subscribed, and never to another merchant's."""

from __future__ import annotations

import time

import pytest

from gateway.webhooks import signature
from tests.loyalty_support import enrol, ok, phone
from tests.webhooks.conftest import Receiver, doc_verify, hook


async def test_a_sale_is_delivered_signed_with_its_event_id(
    http, wn, tills, merchant, receiver: Receiver
):
    created = await hook(http, wn, merchant, receiver.at("/a"))
    assert created["secret"].startswith("whsec_")
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 4250})
    [got] = await receiver.wait_for(1)
    event = got.event
    assert event["type"] == "points.changed"
    assert event["merchant"] == merchant and event["member"] == m
    assert got.headers["Loyalty-Event-Id"] == event["id"]
    assert got.headers["Loyalty-Event-Type"] == "points.changed"
    data = event["data"]
    assert data["kind"] == "earn" and data["op"] == "s1" and data["version"] == 1
    assert data["posted_delta"] == 42 and data["posted"] == 42 and data["available"] == 42
    assert data["store"] == "s1" and data["terminal"] == "t1" and data["channel"] == "pos"
    verify = doc_verify()
    header = got.headers["Loyalty-Signature"]
    assert verify(created["secret"], header, got.body)
    assert not verify(created["secret"], header, got.body.replace(b"42", b"43"))
    assert not verify("whsec_not-the-secret", header, got.body)
    forged = signature(["whsec_attacker"], int(time.time()), got.body)
    assert not verify(created["secret"], forged, got.body)
    old = signature([created["secret"]], int(time.time()) - 301, got.body)
    assert not verify(created["secret"], old, got.body)
    assert verify(
        created["secret"], signature([created["secret"]], int(time.time()), got.body), got.body
    )
    assert not verify(created["secret"], "garbage", got.body)


async def test_every_change_in_order_and_only_subscribed_endpoints(
    http, wn, tills, merchant, other_merchant, receiver: Receiver
):
    await hook(http, wn, merchant, receiver.at("/points"))
    await hook(http, wn, merchant, receiver.at("/tiers"), events=["tier.changed"])
    await hook(http, wn, other_merchant, receiver.at("/other"))
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 5000})
    await ok(till, {"type": "reserve", "op": "h1", "member": m, "points": 30})
    await ok(till, {"type": "commit", "op": "c1", "member": m, "hold": "h1", "points": 20})
    got = await receiver.wait_for(3, "/points")
    kinds = [(r.event["data"]["version"], r.event["data"]["kind"]) for r in got]
    assert kinds == [(1, "earn"), (2, "hold"), (3, "redeem")]
    assert got[2].event["data"]["posted"] == 30 and got[2].event["data"]["held"] == 0
    assert len({r.event["id"] for r in got}) == len(got)
    assert receiver.of("/tiers") == [] and receiver.of("/other") == []


def _js_verify(secret: str, header: str, body: bytes) -> bool:
    """The guide's JavaScript snippet, run by node as the guide has it."""
    import base64
    import json
    import re
    import shutil
    import subprocess

    from tests.webhooks.conftest import DOC

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    block = re.search(r"```javascript\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    script = block.group(1) + (
        "\nconst e = process.env;"
        "\nconsole.log(JSON.stringify(verify(e.SECRET, e.HEADER,"
        " Buffer.from(e.BODY, 'base64'))));\n"
    )
    out = subprocess.run(
        [node, "-e", script],
        env={
            "PATH": "/usr/bin:/bin",
            "SECRET": secret,
            "HEADER": header,
            "BODY": base64.b64encode(body).decode(),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return bool(json.loads(out.stdout))


async def test_the_guides_javascript_snippet_verifies_and_refuses_a_forgery(
    http, wn, tills, merchant, receiver: Receiver
):
    created = await hook(http, wn, merchant, receiver.at("/js"))
    secret = created["secret"]
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 4250})
    [got] = await receiver.wait_for(1, "/js")
    header = got.headers["Loyalty-Signature"]
    assert _js_verify(secret, header, got.body)
    assert not _js_verify(secret, header, got.body.replace(b"42", b"43"))
    assert not _js_verify("whsec_other", header, got.body)
    old = signature([secret], int(time.time()) - 301, got.body)
    assert not _js_verify(secret, old, got.body)
    assert not _js_verify(secret, "t=x,v1=zz", got.body)
