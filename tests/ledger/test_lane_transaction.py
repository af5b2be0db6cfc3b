"""A lane begins the next batch's transaction with the previous COMMIT ("COMMIT; BEGIN", one
round trip less per batch). What that must not cost: vacuum (the idle lane holds no snapshot
and no xid), the time a batch records (never the BEGIN's now()), or the lane itself when the
database kills idle transactions."""

from __future__ import annotations

import asyncio

from gateway.fanout import Publisher
from gateway.ledger import Earn, Ledger, Reserve
from gateway.settings import LedgerSettings
from tests.conftest import unique
from tests.ledger.conftest import LedgerWorld, check_invariants


def lane_pids(ledger: Ledger) -> list[int]:
    return [lane.conn.get_server_pid() for lane in ledger._lanes if lane.conn is not None]


async def test_an_idle_lane_waits_in_an_empty_transaction_holding_nothing(
    ledger_world: LedgerWorld,
):
    w, m = ledger_world, ledger_world.members[0]
    assert (await w.ledger.execute(Earn(unique("e"), m, 100, w.origin))).ok
    (pid,) = lane_pids(w.ledger)  # one member: one lane used
    row = await w.db.fetchrow(
        "SELECT state, backend_xid, backend_xmin FROM pg_stat_activity WHERE pid = $1", pid
    )
    assert row["state"] == "idle in transaction"  # the next batch's BEGIN was sent
    assert row["backend_xid"] is None and row["backend_xmin"] is None  # vacuum is not held
    # and the next batch runs in it: the same backend, no extra BEGIN needed
    assert (await w.ledger.execute(Earn(unique("e"), m, 5, w.origin))).ok
    assert lane_pids(w.ledger) == [pid]
    await check_invariants(w.db, [m])


async def test_a_batch_after_an_idle_gap_records_its_own_time(ledger_world: LedgerWorld):
    """now() in the lane is the time of the BEGIN sent with the previous COMMIT: a timestamp
    taken from it would be as old as the idle gap."""
    w, m = ledger_world, ledger_world.members[1]
    assert (await w.ledger.execute(Earn(unique("e"), m, 100, w.origin))).ok
    await asyncio.sleep(1.5)
    op, hold = unique("e"), unique("h")
    before = await w.db.fetchval("SELECT clock_timestamp()")
    assert (await w.ledger.execute(Earn(op, m, 10, w.origin))).ok
    assert (await w.ledger.execute(Reserve(hold, m, 20, 60_000, w.origin))).ok
    after = await w.db.fetchval("SELECT clock_timestamp()")
    stamps = await w.db.fetch(
        """SELECT created_at FROM operations WHERE merchant_id = $1 AND op_id = ANY($2::text[])
           UNION ALL SELECT created_at FROM ledger_entries WHERE member_id = $3 AND version > 1
           UNION ALL SELECT created_at FROM holds WHERE merchant_id = $1 AND id = $4
           UNION ALL SELECT updated_at FROM accounts WHERE member_id = $3""",
        w.merchant,
        [op, hold],
        m,
        hold,
    )
    assert len(stamps) == 6
    for r in stamps:
        assert before <= r[0] <= after, (before, r[0], after)
    expires = await w.db.fetchval(
        "SELECT expires_at - created_at FROM holds WHERE merchant_id = $1 AND id = $2",
        w.merchant,
        hold,
    )
    assert expires.total_seconds() == 60


async def test_the_lane_survives_a_database_that_ends_idle_transactions(
    pg_dsn: str, ledger_world: LedgerWorld
):
    """An operator's idle_in_transaction_session_timeout must not kill the idle lanes: each
    would cost a reconnect, and a batch racing the kill a retryable failure."""
    w, m = ledger_world, ledger_world.members[2]
    dbname = await w.db.fetchval("SELECT current_database()")
    await w.db.execute(f'ALTER DATABASE "{dbname}" SET idle_in_transaction_session_timeout = 200')
    ledger = Ledger(pg_dsn, LedgerSettings(lanes=1), Publisher(w.redis, w.keys))
    try:
        await ledger.start()
        assert (await ledger.execute(Earn(unique("e"), m, 100, w.origin))).ok
        (pid,) = lane_pids(ledger)
        await asyncio.sleep(0.6)
        alive = await w.db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        assert alive == 1
        assert (await ledger.execute(Earn(unique("e"), m, 5, w.origin))).ok
        assert lane_pids(ledger) == [pid]
    finally:
        await ledger.close()
        await w.db.execute(f'ALTER DATABASE "{dbname}" RESET idle_in_transaction_session_timeout')
    await check_invariants(w.db, [m])


async def test_a_lane_whose_open_transaction_was_killed_reconnects_and_begins_again(
    ledger_world: LedgerWorld,
):
    """The empty transaction dies with its backend (a restart, pg_terminate_backend): the
    next batch runs on a new connection, in a transaction of its own, applied once."""
    w, m = ledger_world, ledger_world.members[3]
    assert (await w.ledger.execute(Earn(unique("e"), m, 100, w.origin))).ok
    (pid,) = lane_pids(w.ledger)
    assert await w.db.fetchval("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.3)
    assert (await w.ledger.execute(Earn(unique("e"), m, 5, w.origin))).ok
    (new_pid,) = lane_pids(w.ledger)
    assert new_pid != pid
    assert await w.db.fetchval("SELECT posted FROM accounts WHERE member_id = $1", m) == 105
    await check_invariants(w.db, [m])
