"""Slice 9: points expire after the programme's days without activity; the job is safe to run
on several nodes at once and each expiry is pushed like any other change."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.expiry import job as expiry
from protocol.messages import BalanceChanged
from tests.loyalty_support import admin, member_with_points, next_push, ok, setup_db


async def test_inactive_points_expire_once_and_are_pushed(clients, merchant, pg_dsn, rn):
    await setup_db(
        pg_dsn, "UPDATE programmes SET expiry_days = 30 WHERE merchant_id = $1", merchant
    )
    till = await clients.pos(merchant)
    m = await member_with_points(till, 12_300)
    active = await member_with_points(till, 5_000)
    await setup_db(
        pg_dsn,
        "UPDATE accounts SET updated_at = now() - interval '31 days' WHERE member_id = $1",
        m,
    )
    hold = f"h-{m}"
    app = await clients.app(merchant, m)
    await ok(app, {"type": "subscribe", "member": m})
    svc = rn.node
    # two runners at once (two nodes): the balance expires once
    runs = await asyncio.gather(
        svc.expiry.run(merchant=merchant), svc.expiry.run(merchant=merchant)
    )
    assert sum(runs) == 1
    push = await next_push(app, BalanceChanged)
    assert push.cause.kind == "points_expiry" and push.available == 0
    bal = await ok(till, {"type": "balance", "member": m})
    assert bal.posted == 0
    assert (await ok(till, {"type": "balance", "member": active})).posted == 50
    assert await svc.expiry.run(merchant=merchant) == 0
    # once inactive long enough the active member expires too; held points are not touched
    await ok(till, {"type": "reserve", "op": hold, "member": active, "points": 20})
    await setup_db(
        pg_dsn,
        "UPDATE accounts SET updated_at = now() - interval '31 days' WHERE member_id = $1",
        active,
    )
    assert await svc.expiry.run(merchant=merchant) == 1
    after = await ok(till, {"type": "balance", "member": active})
    assert (after.posted, after.held, after.available) == (20, 20, 0)


async def test_expiry_hands_no_advisory_lock_back_to_the_pool(clients, merchant, pg_dsn, rn):
    """Pooled connections are not reset on release (gateway/store/db.py): the expiry job must
    unlock its session-level lock itself, or no node could run expiry again."""
    import asyncpg

    svc = rn.node
    await svc.expiry.run(merchant=merchant)
    db = await asyncpg.connect(pg_dsn)
    try:
        held = await db.fetchval(
            """SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND d.datname = current_database()"""
        )
    finally:
        await db.close()
    assert held == 0
    assert await svc.expiry.run(merchant=merchant) == 0  # and it can run again


async def test_a_client_cannot_take_the_expiry_op_id_first(clients, merchant, pg_dsn, rn):
    """Found in review: the expiry's id (``expiry:<member>:<version>``) was a valid client id,
    so a POS could use it first and that expiry would be refused as an id conflict."""
    await setup_db(
        pg_dsn, "UPDATE programmes SET expiry_days = 30 WHERE merchant_id = $1", merchant
    )
    till = await clients.pos(merchant)
    m = await member_with_points(till, 1_000)
    version = (await ok(till, {"type": "balance", "member": m})).version
    await ok(till, {"type": "sale", "op": f"expiry:{m}:{version}", "member": m, "total": 0})
    await setup_db(
        pg_dsn,
        "UPDATE accounts SET updated_at = now() - interval '31 days' WHERE member_id = $1",
        m,
    )
    svc = rn.node
    assert await svc.expiry.run(merchant=merchant) == 1
    assert (await ok(till, {"type": "balance", "member": m})).posted == 0


async def idle_member(clients: Any, merchant: str, pg_dsn: str, cents: int, idle: str) -> Any:
    """A till and a member with ``cents`` worth of points whose last activity was ``idle``
    (an SQL interval) ago, under a 30-day expiry."""
    await setup_db(
        pg_dsn, "UPDATE programmes SET expiry_days = 30 WHERE merchant_id = $1", merchant
    )
    till = await clients.pos(merchant)
    m = await member_with_points(till, cents)
    await setup_db(
        pg_dsn,
        f"UPDATE accounts SET updated_at = now() - interval '{idle}' WHERE member_id = $1",
        m,
    )
    return till, m


async def _kinds(pg_dsn: str, m: str) -> list[str]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT kind FROM ledger_entries WHERE member_id = $1 ORDER BY version", m
        )
    finally:
        await conn.close()
    return [r["kind"] for r in rows]


async def test_activity_committed_before_the_expiry_postpones_it(clients, merchant, pg_dsn, rn):
    """Found in review: the expiry job read an inactive account, then queued a debit of its
    balance; a sale committed in between (another node's, or one queued ahead in the lane)
    counted for nothing and the old balance was taken right after it. The expiry now posts
    only while the account is still at the version it read, checked under the row lock."""
    till, m = await idle_member(clients, merchant, pg_dsn, 12_300, "31 days")  # 123 points
    svc = rn.node
    blocker = await asyncpg.connect(pg_dsn)  # another node's batch on this member, in flight
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM accounts WHERE member_id = $1 FOR UPDATE", m)
        sale = asyncio.ensure_future(
            ok(till, {"type": "sale", "op": f"s-{m}", "member": m, "total": 5_000})
        )
        await asyncio.sleep(0.3)  # the sale waits for the lock in its lane
        expiry = asyncio.ensure_future(svc.expiry.run(merchant=merchant))
        await asyncio.sleep(0.3)  # the job has read the account and queued its expiry
        await blocker.execute("COMMIT")
    finally:
        await blocker.close()
    assert (await asyncio.wait_for(sale, 10)).points == 50
    assert await asyncio.wait_for(expiry, 10) == 0
    bal = await ok(till, {"type": "balance", "member": m})
    assert (bal.posted, await _kinds(pg_dsn, m)) == (173, ["earn", "earn"])


async def test_an_expiry_run_never_expires_points_before_their_time(
    clients, merchant, pg_dsn, http, rn
):
    """Found in review: a ``now`` up to 60 s ahead of the node's clock (the skew allowed) was
    used as is, so points due in 20 s expired at once. It is read as the database's clock."""
    # 100 points, due in 20 s
    till, m = await idle_member(clients, merchant, pg_dsn, 10_000, "30 days - 20 seconds")
    ahead = (datetime.now(UTC) + timedelta(seconds=50)).isoformat()
    url = f"{rn.url}/admin/v1/merchants/{merchant}/expiry/run"
    assert await admin(http, "POST", url, json={"now": ahead}) == (200, {"expired": 0})
    assert (await ok(till, {"type": "balance", "member": m})).posted == 100


async def test_expiry_queues_a_chunk_at_a_time_and_drains_a_backlog(
    clients, merchant, pg_dsn, rn, monkeypatch
):
    """A pass queued every expiry of its batch (5,000) in the ledger at once, which queued the
    tills behind them for about a second, and a backlog larger than a pass waited an hour per
    pass. Expiries now go a chunk at a time, and the background loop's passes follow each
    other while they come back full."""
    monkeypatch.setattr(expiry, "EXPIRY_BATCH", 3)
    monkeypatch.setattr(expiry, "EXPIRY_CHUNK", 2)
    await setup_db(
        pg_dsn, "UPDATE programmes SET expiry_days = 30 WHERE merchant_id = $1", merchant
    )
    till = await clients.pos(merchant)
    members = [await member_with_points(till, 1_000) for _ in range(7)]
    await setup_db(
        pg_dsn,
        "UPDATE accounts SET updated_at = now() - interval '31 days'"
        " WHERE member_id = ANY($1::text[])",
        members,
    )
    svc = rn.node
    submit, in_flight, most = svc.ledger.submit, 0, 0

    def counted(op: Any) -> Any:
        nonlocal in_flight, most
        fut = submit(op)
        in_flight += 1
        most = max(most, in_flight)

        def done(_: Any) -> None:
            nonlocal in_flight
            in_flight -= 1

        fut.add_done_callback(done)
        return fut

    monkeypatch.setattr(svc.ledger, "submit", counted)
    assert await svc.expiry.run(merchant=merchant) == 3  # one pass
    assert most == 2
    assert await svc.expiry.run(merchant=merchant, drain=True) == 4  # the rest, pass after pass
    for m in members:
        assert (await ok(till, {"type": "balance", "member": m})).posted == 0
