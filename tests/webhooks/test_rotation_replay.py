"""Secret rotation with an overlap (both secrets sign, then only the new one), failed
deliveries listed (paginated) and replayed with their event ids, and no delivery lost when a
node dies right after a commit or in the middle of an attempt."""

from __future__ import annotations

import asyncio

from tests.conftest import REDIS_URL
from tests.loyalty_support import Clients, admin, enrol, ok, phone
from tests.support import NodeProcess, WsClient, pos_token, running_node
from tests.webhooks.conftest import Receiver, deliveries, doc_verify, hook, hook_settings


def v1s(header: str) -> int:
    return sum(part.startswith("v1=") for part in header.split(","))


async def test_a_rotated_secret_signs_beside_the_new_one_until_its_overlap_ends(
    http, wn, tills, merchant, receiver: Receiver
):
    verify = doc_verify()
    made = await hook(http, wn, merchant, receiver.at("/rot"))
    first = made["secret"]
    url = f"{wn.url}/admin/v1/merchants/{merchant}/webhooks/{made['id']}/rotate"
    status, rotated = await admin(http, "POST", url, json={"overlap_seconds": 60})
    assert status == 200 and rotated["secret"] != first and rotated["previous_secret_until"]
    second = rotated["secret"]
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 1000})
    [got] = await receiver.wait_for(1, "/rot")
    header = got.headers["Loyalty-Signature"]
    assert v1s(header) == 2
    assert verify(first, header, got.body) and verify(second, header, got.body)
    # rotated again without an overlap: only the newest signs, the two before no longer
    status, rotated = await admin(http, "POST", url, json={"overlap_seconds": 0})
    assert status == 200 and rotated["previous_secret_until"] is None
    third = rotated["secret"]
    await ok(till, {"type": "sale", "op": "s2", "member": m, "total": 1000})
    got = (await receiver.wait_for(2, "/rot"))[1]
    header = got.headers["Loyalty-Signature"]
    assert v1s(header) == 1 and verify(third, header, got.body)
    assert not verify(first, header, got.body) and not verify(second, header, got.body)
    status, read = await admin(http, "GET", url.removesuffix("/rotate"))
    assert "secret" not in read and read["previous_secret_until"] is None


async def test_failed_deliveries_are_listed_by_page_and_replayed_with_their_ids(
    http, pg_dsn, redis_prefix, merchant, receiver: Receiver
):
    async with running_node(hook_settings(pg_dsn, "rpl", retry_seconds=0.2), redis_prefix) as n:
        c = Clients(http, n.url)
        try:
            made = await hook(http, n, merchant, receiver.at("/f"))
            receiver.answers["/f"] = [500]
            till = await c.pos(merchant)
            members = [(await enrol(till, phone=phone())).member for _ in range(3)]
            for i, m in enumerate(members):
                await ok(till, {"type": "sale", "op": f"s{i}", "member": m, "total": 1000})
            for _ in range(100):
                failed = await deliveries(http, n, merchant, made["id"], "state=failed")
                if len(failed) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(failed) == 3
            status, page = await admin(
                http,
                "GET",
                f"{n.url}/admin/v1/merchants/{merchant}/webhooks/{made['id']}"
                "/deliveries?state=failed&limit=2",
            )
            assert len(page["deliveries"]) == 2 and page["next"] is not None
            rest = await deliveries(
                http, n, merchant, made["id"], f"state=failed&limit=2&after={page['next']}"
            )
            assert len(rest) == 1
            ids = [d["id"] for d in page["deliveries"]] + [rest[0]["id"]]
            assert ids == sorted(ids, reverse=True)
            receiver.answers["/f"] = [200]
            base = f"{n.url}/admin/v1/merchants/{merchant}/webhooks/{made['id']}"
            one = failed[0]
            status, replayed = await admin(http, "POST", f"{base}/deliveries/{one['id']}/replay")
            assert status == 200 and replayed["state"] == "pending", replayed
            [got] = await receiver.wait_for(1, "/f")
            assert got.event["id"] == one["event"]
            status, replayed = await admin(http, "POST", f"{base}/replay")
            assert status == 200 and replayed == {"replayed": 2}
            got = await receiver.wait_for(3, "/f")
            assert {r.event["id"] for r in got} == {d["event"] for d in failed}
            for _ in range(50):
                if not await deliveries(http, n, merchant, made["id"], "state=pending"):
                    break
                await asyncio.sleep(0.05)
            done = await deliveries(http, n, merchant, made["id"], "state=delivered")
            assert len(done) == 3
            assert (await admin(http, "POST", f"{base}/deliveries/999999999/replay"))[0] == 404
        finally:
            await c.close()


def _env(**extra: str) -> dict[str, str]:
    return {
        "GATEWAY_WEBHOOKS_ALLOW_PRIVATE": "1",
        "GATEWAY_WEBHOOKS_POLL_SECONDS": "0.05",
        "GATEWAY_WEBHOOKS_TIMEOUT": "2",
        "GATEWAY_WEBHOOKS_BACKOFF_SECONDS": "0.05",
        "GATEWAY_WEBHOOKS_BACKOFF_MAX_SECONDS": "0.2",
        **extra,
    }


async def test_no_delivery_lost_when_a_node_dies_right_after_the_commit(
    http, wn, pg_dsn, redis_prefix, merchant, receiver: Receiver
):
    """The node process exits (like kill -9) right after the COMMIT of the sale, before its
    reply or anything else: the event and its delivery were in that transaction, and the
    surviving node delivers them."""
    await hook(http, wn, merchant, receiver.at("/crash"))
    proc = NodeProcess(
        pg_dsn,
        REDIS_URL,
        redis_prefix,
        "doomed",
        _env(GATEWAY_FAULT_CRASH_AFTER_COMMIT="crash-", GATEWAY_WEBHOOKS_POLL_SECONDS="0"),
    )
    try:
        await proc.wait_ready()
        till = await WsClient.connect(http, proc.url)
        await till.hello(pos_token(merchant))
        m = (await enrol(till, phone=phone())).member
        try:
            await till.request(
                {"type": "sale", "op": "crash-1", "member": m, "total": 1000}, timeout=5
            )
            raise AssertionError("the node answered")
        except (ConnectionError, TimeoutError):
            pass
        assert proc.wait(10) == 137
    finally:
        proc.terminate()
    [got] = await receiver.wait_for(1, "/crash")
    assert got.event["data"]["op"] == "crash-1" and got.event["member"] == m


async def test_no_delivery_lost_when_the_delivering_node_is_killed_mid_attempt(
    http, pg_dsn, redis_prefix, merchant, receiver: Receiver
):
    """A node process is killed while its POST waits for the receiver's answer; once the
    attempt's lease has run out, another node sends the delivery again, with the same id."""
    receiver.answers["/mid"] = [("sleep", 8.0), 200]
    quiet = hook_settings(pg_dsn, "quiet", poll_seconds=0.0)  # writes, delivers nothing
    async with running_node(quiet, redis_prefix) as writer:
        await hook(http, writer, merchant, receiver.at("/mid"))
        proc = NodeProcess(pg_dsn, REDIS_URL, redis_prefix, "deliverer", _env())
        try:
            await proc.wait_ready()
            c = Clients(http, writer.url)
            till = await c.pos(merchant)
            m = (await enrol(till, phone=phone())).member
            await ok(till, {"type": "sale", "op": "mid-1", "member": m, "total": 1000})
            for _ in range(100):
                if receiver.started:
                    break
                await asyncio.sleep(0.05)
            assert receiver.started == ["/mid"]
            proc.proc.kill()
            proc.wait(10)
            await c.close()
        finally:
            proc.terminate()
        async with running_node(hook_settings(pg_dsn, "survivor"), redis_prefix) as survivor:
            got = await receiver.wait_for(1, "/mid", timeout=15)
            assert got[0].event["data"]["op"] == "mid-1"
            assert survivor.node.deliverer.delivered == 1
            await asyncio.sleep(0.5)
            ids = {r.event["id"] for r in receiver.got}
            assert len(ids) == 1  # the first attempt (answered late) and the second: one id


async def test_delivered_deliveries_and_their_events_are_pruned_after_the_retention(
    http, wn, tills, merchant, pg_dsn, receiver: Receiver
):
    import asyncpg

    made = await hook(http, wn, merchant, receiver.at("/p"))
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 1000})
    await ok(till, {"type": "sale", "op": "s2", "member": m, "total": 1000})
    await receiver.wait_for(2, "/p")
    conn = await asyncpg.connect(pg_dsn)
    try:
        for _ in range(50):
            done = await conn.fetch(
                """SELECT id, event_id FROM webhook_deliveries
                    WHERE endpoint_id = $1 AND state = 'delivered' ORDER BY id""",
                made["id"],
            )
            if len(done) == 2:
                break
            await asyncio.sleep(0.05)
        old, kept = done
        await conn.execute(
            """UPDATE webhook_deliveries SET delivered_at = now() - interval '8 days'
                WHERE id = $1""",
            old["id"],
        )
        await conn.execute(
            "UPDATE webhook_events SET created_at = now() - interval '8 days' WHERE id = $1",
            old["event_id"],
        )
        await wn.node.deliverer.prune()
        left = await conn.fetch(
            "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", made["id"]
        )
        assert [r["id"] for r in left] == [kept["id"]]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM webhook_events WHERE id = $1", old["event_id"]
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM webhook_events WHERE id = $1", kept["event_id"]
            )
            == 1
        )
    finally:
        await conn.close()
