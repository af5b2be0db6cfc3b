"""Retries and order: a delivery answered 500 or timing out is retried with backoff and the
same event id until it is delivered; one that fails for its whole retry period is failed and
no longer holds its member's later deliveries; a member's deliveries to an endpoint arrive in
the order of its changes even under concurrent sales and failures; a slow endpoint delays
no other; two nodes share the deliveries without sending one twice."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict

from tests.loyalty_support import Clients, enrol, ok, phone
from tests.support import running_node
from tests.webhooks.conftest import Receiver, deliveries, hook, hook_settings


async def test_a_500_is_retried_with_the_same_event_id(
    http, wn, tills, merchant, receiver: Receiver
):
    made = await hook(http, wn, merchant, receiver.at("/r"))
    receiver.answers["/r"] = [500, 503, 200]
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 1000})
    await receiver.wait_for(1, "/r")
    tries = receiver.of("/r")
    assert [r.status for r in tries] == [500, 503, 200]
    assert len({r.event["id"] for r in tries}) == 1
    assert len({r.headers["Loyalty-Event-Id"] for r in tries}) == 1
    [d] = await deliveries(http, wn, merchant, made["id"])
    assert d["state"] == "delivered" and d["attempts"] == 3 and d["last_status"] == 200


async def test_a_timeout_is_retried(http, wn, tills, merchant, receiver: Receiver):
    """The node's timeout is 1 s: the first answer comes after 1.5 s."""
    made = await hook(http, wn, merchant, receiver.at("/slow"))
    receiver.answers["/slow"] = [("sleep", 1.5), 200]
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 1000})
    await receiver.wait_for(2, "/slow")  # the late one counted as a 200 by the receiver
    [d] = await deliveries(http, wn, merchant, made["id"])
    for _ in range(50):
        [d] = await deliveries(http, wn, merchant, made["id"])
        if d["state"] == "delivered":
            break
        await asyncio.sleep(0.1)
    assert d["state"] == "delivered" and d["attempts"] == 2, d


async def test_failed_after_the_retry_period_then_the_members_next_goes(
    http, pg_dsn, redis_prefix, merchant, receiver: Receiver
):
    async with running_node(hook_settings(pg_dsn, "rp", retry_seconds=0.4), redis_prefix) as n:
        c = Clients(http, n.url)
        try:
            made = await hook(http, n, merchant, receiver.at("/down"))
            receiver.answers["/down"] = [500]
            till = await c.pos(merchant)
            m = (await enrol(till, phone=phone())).member
            await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 1000})
            for _ in range(100):
                failed = await deliveries(http, n, merchant, made["id"], "state=failed")
                if failed:
                    break
                await asyncio.sleep(0.05)
            [f] = failed
            assert f["attempts"] >= 2 and f["last_status"] == 500 and f["last_error"] == "HTTP 500"
            receiver.answers["/down"] = [200]
            await ok(till, {"type": "sale", "op": "s2", "member": m, "total": 1000})
            [got] = await receiver.wait_for(1, "/down")
            assert got.event["data"]["version"] == 2
        finally:
            await c.close()


async def test_a_members_changes_arrive_in_order_under_concurrent_sales_and_failures(
    http, wn, tills, merchant, receiver: Receiver
):
    await hook(http, wn, merchant, receiver.at("/o"))
    rng = random.Random(7)
    receiver.policy["/o"] = lambda: 500 if rng.random() < 0.3 else 200
    registers = [await tills.pos(merchant, terminal=f"t{i}") for i in range(4)]
    members = [(await enrol(registers[0], phone=phone())).member for _ in range(6)]

    async def ring(i: int) -> None:
        till = registers[i]
        for k in range(10):
            m = members[(i + k) % len(members)]
            await ok(till, {"type": "sale", "op": f"o{i}-{k}", "member": m, "total": 100 + k})

    await asyncio.gather(*(ring(i) for i in range(4)))
    await receiver.wait_for(40, "/o", timeout=30)
    versions: dict[str, list[int]] = defaultdict(list)
    for r in receiver.ok("/o"):
        versions[r.event["member"]].append(r.event["data"]["version"])
    for m, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), (m, seen)
    assert sum(len(v) for v in versions.values()) == 40


async def test_a_slow_endpoint_delays_no_other(
    http, wn, tills, merchant, other_merchant, receiver: Receiver
):
    """One endpoint sleeps past the timeout on every call; the other's deliveries (its own
    merchant's, and the same merchant's to a second endpoint) keep arriving at once."""
    await hook(http, wn, merchant, receiver.at("/stuck"))
    await hook(http, wn, merchant, receiver.at("/fine"))
    receiver.policy["/stuck"] = lambda: ("sleep", 3.0)
    till = await tills.pos(merchant)
    members = [(await enrol(till, phone=phone())).member for _ in range(20)]
    started = time.monotonic()
    for i, m in enumerate(members):
        await ok(till, {"type": "sale", "op": f"f{i}", "member": m, "total": 100})
    await receiver.wait_for(20, "/fine", timeout=5)
    assert time.monotonic() - started < 4  # not behind the 1 s timeouts of /stuck's 20
    assert len(receiver.ok("/stuck")) == 0


async def test_two_nodes_share_the_deliveries_without_sending_one_twice(
    http, wn, tills, pg_dsn, redis_prefix, merchant, receiver: Receiver
):
    await hook(http, wn, merchant, receiver.at("/two"))
    async with running_node(hook_settings(pg_dsn, "wh2"), redis_prefix) as second:
        till = await tills.pos(merchant)
        members = [(await enrol(till, phone=phone())).member for _ in range(10)]
        sales = [
            ok(till, {"type": "sale", "op": f"t{i}", "member": members[i % 10], "total": 100})
            for i in range(100)
        ]
        await asyncio.gather(*sales)
        await receiver.wait_for(100, "/two", timeout=30)
        await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
        counts = Counter(r.event["id"] for r in receiver.of("/two"))
        assert len(counts) == 100 and set(counts.values()) == {1}
        shares = (wn.node.deliverer.delivered, second.node.deliverer.delivered)
        assert sum(shares) == 100, shares
