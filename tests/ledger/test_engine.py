"""The ledger engine against the real PostgreSQL: semantics, refusals, idempotency, and the
database's own guarantees (constraints, append-only entries)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from gateway.errors import GatewayError
from gateway.ledger import Commit, Earn, Expire, Origin, Release, Reserve
from protocol.codes import ErrorCode
from tests.conftest import unique
from tests.ledger.conftest import LedgerWorld, check_invariants


async def balance(w: LedgerWorld, member: str) -> tuple[int, int, int]:
    r = await w.db.fetchrow("SELECT posted, held, version FROM accounts WHERE member_id=$1", member)
    return r["posted"], r["held"], r["version"]


async def fund(w: LedgerWorld, member: str, points: int) -> None:
    out = await w.ledger.execute(Earn(unique("fund"), member, points, w.origin))
    assert out.ok


async def test_two_phase_flow_and_partial_commit(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[0]
    await fund(w, m, 1000)
    r = await w.ledger.execute(Reserve("h-" + m, m, 400, 60_000, w.origin))
    assert r.ok and r.data.status == "active"
    assert await balance(w, m) == (1000, 400, 2)
    c = await w.ledger.execute(Commit(unique("c"), m, "h-" + m, 150, w.origin))
    assert c.ok and c.data.committed == 150
    # partial commit releases the rest
    assert await balance(w, m) == (850, 0, 3)
    await check_invariants(w.db, [m])


async def test_refusals_change_nothing(ledger_world: LedgerWorld):
    w, m, other = ledger_world, ledger_world.members[1], ledger_world.members[2]
    await fund(w, m, 100)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 60, 60_000, w.origin))).ok
    before = await balance(w, m)
    foreign = Origin(unique("mer-other"))
    cases = [
        (Reserve(unique("r"), m, 41, 60_000, w.origin), ErrorCode.INSUFFICIENT_POINTS),
        (Reserve(unique("r"), "no-such-member", 1, 60_000, w.origin), ErrorCode.MEMBER_NOT_FOUND),
        (Reserve(unique("r"), m, 1, 60_000, foreign), ErrorCode.MEMBER_NOT_FOUND),
        (Commit(unique("c"), m, "no-such-hold", None, w.origin), ErrorCode.HOLD_NOT_FOUND),
        (Commit(unique("c"), other, hold, None, w.origin), ErrorCode.HOLD_NOT_FOUND),
        (Commit(unique("c"), m, hold, 61, w.origin), ErrorCode.COMMIT_EXCEEDS_HOLD),
        (Release(unique("c"), m, "no-such-hold", w.origin), ErrorCode.HOLD_NOT_FOUND),
        (Earn(unique("e"), m, -41, w.origin, kind="adjustment"), ErrorCode.INSUFFICIENT_POINTS),
    ]
    for op, code in cases:
        out = await w.ledger.execute(op)
        assert not out.ok and out.error.code == code.value, (op, out)
    assert await balance(w, m) == before
    # a hold of another merchant with the same id is invisible
    out = await w.ledger.execute(Commit(unique("c"), m, hold, None, Origin(unique("m2"))))
    assert not out.ok and out.error.code in (
        ErrorCode.MEMBER_NOT_FOUND.value,
        ErrorCode.HOLD_NOT_FOUND.value,
    )
    # resolve once: release, then commit and release again are refused
    assert (await w.ledger.execute(Release(unique("rl"), m, hold, w.origin))).ok
    for op in (
        Commit(unique("c"), m, hold, None, w.origin),
        Release(unique("rl"), m, hold, w.origin),
    ):
        out = await w.ledger.execute(op)
        assert out.error.code == ErrorCode.HOLD_NOT_ACTIVE.value
    await check_invariants(w.db, [m, other])


async def test_expired_hold_cannot_be_committed_even_before_the_sweeper(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[3]
    await fund(w, m, 50)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 50, 1_000, w.origin))).ok
    # time passes: move the expiry into the past (the sweeper does not run in this fixture)
    await w.db.execute("UPDATE holds SET expires_at = now() - interval '1 ms' WHERE id=$1", hold)
    out = await w.ledger.execute(Commit(unique("c"), m, hold, None, w.origin))
    assert out.error.code == ErrorCode.HOLD_EXPIRED.value
    posted, held, _ = await balance(w, m)
    assert (posted, held) == (50, 0)
    kinds = [
        r["kind"]
        for r in await w.db.fetch(
            "SELECT kind FROM ledger_entries WHERE member_id=$1 ORDER BY version", m
        )
    ]
    assert kinds[-1] == "expire"
    await check_invariants(w.db, [m])


async def test_sweeper_never_releases_early(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[0]
    await fund(w, m, 10)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 10, 3_600_000, w.origin))).ok
    out = await w.ledger.execute(Expire(m, w.origin))
    assert out.ok
    status = await w.db.fetchval("SELECT status FROM holds WHERE id=$1", hold)
    assert status == "active"


async def test_idempotency_replays_results_and_refusals(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[1]
    await fund(w, m, 10)
    op = Reserve(unique("h"), m, 20, 60_000, w.origin)
    first = await w.ledger.execute(op)
    assert first.error.code == ErrorCode.INSUFFICIENT_POINTS.value
    await fund(w, m, 100)
    # the same id and content returns the original refusal, even though it would now succeed
    assert await w.ledger.execute(op) == first
    changed = Reserve(op.op, m, 5, 60_000, w.origin)
    assert (await w.ledger.execute(changed)).error.code == ErrorCode.IDEMPOTENCY_CONFLICT.value
    ok = Earn(unique("e"), m, 7, w.origin)
    a, b = await asyncio.gather(w.ledger.execute(ok), w.ledger.execute(ok))
    assert a == b and a.ok
    n = await w.db.fetchval("SELECT count(*) FROM ledger_entries WHERE op_id=$1", ok.op)
    assert n == 1
    await check_invariants(w.db, [m])


async def test_database_refuses_negative_available_and_edits_to_entries(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[2]
    await fund(w, m, 5)
    with pytest.raises(asyncpg.CheckViolationError):
        await w.db.execute("UPDATE accounts SET held = 6 WHERE member_id=$1", m)
    with pytest.raises(asyncpg.RaiseError):
        await w.db.execute("UPDATE ledger_entries SET posted_delta = 0 WHERE member_id=$1", m)
    with pytest.raises(asyncpg.RaiseError):
        await w.db.execute("DELETE FROM ledger_entries WHERE member_id=$1", m)


async def test_every_change_is_in_the_outbox_until_published(
    ledger_world: LedgerWorld, redis_prefix
):
    w, m = ledger_world, ledger_world.members[3]
    pubsub = w.redis.pubsub()
    await pubsub.subscribe(w.keys.member_channel(m))
    await pubsub.get_message(timeout=1)
    out = await w.ledger.execute(Earn(unique("e"), m, 3, w.origin))
    msg = None
    for _ in range(20):
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            break
    assert msg is not None and b'"version":%d' % out.data.balance.version in msg["data"]
    # the outbox row is written in the same transaction (deleted later by the relay)
    assert (
        await w.db.fetchval(
            "SELECT count(*) FROM outbox WHERE member_id=$1 AND version=$2",
            m,
            out.data.balance.version,
        )
        == 1
    )
    await pubsub.aclose()


async def test_many_concurrent_operations_on_few_members(ledger_world: LedgerWorld):
    w = ledger_world
    for m in w.members:
        await fund(w, m, 1000)
    ops = []
    for i in range(400):
        m = w.members[i % len(w.members)]
        ops.append(Reserve(f"h{i}-{m}", m, 7, 60_000, w.origin))
    outs = await asyncio.gather(*(w.ledger.execute(o) for o in ops))
    accepted = sum(o.ok for o in outs)
    refused = [o for o in outs if not o.ok]
    assert all(o.error.code == ErrorCode.INSUFFICIENT_POINTS.value for o in refused)
    # 1000 // 7 = 142 holds fit per member
    assert accepted == len(w.members) * min(100, 142)
    commits = [Commit(f"c{i}", op.member, op.op, None, w.origin) for i, op in enumerate(ops)]
    outs = await asyncio.gather(*(w.ledger.execute(c) for c in commits))
    assert sum(o.ok for o in outs) == accepted
    await check_invariants(w.db, w.members)


async def test_reads_on_this_node_never_lag_its_own_replies(ledger_world: LedgerWorld, pg_dsn: str):
    """Publishing happens after the reply; a balance read on the node that replied must still
    show that change even if the cache has not caught up (here: never, no publisher)."""
    from gateway.ledger import Ledger, Reads
    from gateway.settings import LedgerSettings

    w, m = ledger_world, ledger_world.members[0]
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    reads = Reads(pool, w.redis, w.keys)
    await fund(w, m, 10)
    await w.ledger.published()
    assert (await reads.balance(m)).posted >= 10  # fills the cache
    silent = Ledger(pg_dsn, LedgerSettings(lanes=1), sink=None)
    await silent.start()
    reads.versions = silent.versions
    out = await silent.execute(Earn(unique("e"), m, 5, w.origin))
    bal = await reads.balance(m)
    assert bal.version == out.data.balance.version and bal.posted == out.data.balance.posted
    await silent.close()
    await pool.close()


async def test_a_batch_that_waited_for_a_lock_reads_what_the_holder_committed(
    ledger_world: LedgerWorld, pg_dsn: str
):
    """The lock and the reads share one statement, whose snapshot predates a lock wait. Here
    another node's batch reserves a hold and commits while this node's commit of that very
    hold waits for the member's lock: the commit must see the hold (read again after the
    lock), not answer hold_not_found."""
    from gateway.ledger import Ledger
    from gateway.ledger.lane import Item, _transact
    from gateway.settings import LedgerSettings

    w, m = ledger_world, ledger_world.members[2]
    await fund(w, m, 100)
    other = await asyncpg.connect(pg_dsn)
    try:
        await other.execute("BEGIN")
        hold = unique("h")
        fut = asyncio.get_running_loop().create_future()
        lane = Ledger(pg_dsn, LedgerSettings(lanes=1))._lanes[0]  # its context, not started
        outs, _ = await _transact(
            other, [Item(Reserve(hold, m, 30, 60_000, w.origin), fut)], lane.ctx
        )
        assert outs[0].ok
        rereads = w.ledger.stats.rereads
        commit = asyncio.ensure_future(
            w.ledger.execute(Commit(unique("c"), m, hold, None, w.origin))
        )
        await asyncio.sleep(0.3)
        assert not commit.done(), "the commit should be waiting for the member's lock"
        await other.execute("COMMIT")
    finally:
        await other.close()
    out = await asyncio.wait_for(commit, 10)
    assert out.ok, out
    assert out.data.balance.posted == 70 and out.data.balance.held == 0
    assert w.ledger.stats.rereads == rereads + 1
    await check_invariants(w.db, [m])


async def test_expiry_is_judged_by_the_clock_after_the_lock_wait(
    ledger_world: LedgerWorld, pg_dsn: str
):
    """Found in review: the batch read its clock before waiting for the member's lock, so a
    commit that waited out its hold's expiry behind another transaction was accepted, and a
    reserve that waited was born already expired."""
    w, m = ledger_world, ledger_world.members[3]
    await fund(w, m, 100)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 60, 1_000, w.origin))).ok
    blocker = await asyncpg.connect(pg_dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM accounts WHERE member_id = $1 FOR UPDATE", m)
        commit = w.ledger.submit(Commit(unique("c"), m, hold, None, w.origin))
        waiting = w.ledger.submit(Reserve(unique("h"), m, 10, 1_000, w.origin))
        await asyncio.sleep(1.5)  # the hold expires while both wait for the lock
        await blocker.execute("COMMIT")
    finally:
        await blocker.close()
    out = await asyncio.wait_for(commit, 10)
    assert out.error is not None and out.error.code == ErrorCode.HOLD_EXPIRED, out
    born = await asyncio.wait_for(waiting, 10)
    assert born.ok, born
    left_ms = born.data.expires_at - time.time() * 1000
    assert left_ms > 500, left_ms  # its whole ttl from the commit, not already past
    assert await balance(w, m) == (100, 10, 4)  # earn, reserve, expire, reserve
    await check_invariants(w.db, [m])


async def test_an_out_of_bounds_operation_is_refused_alone_not_with_its_batch(
    ledger_world: LedgerWorld,
):
    """Found in review: the engine trusted its callers' values; a reserve of 0 or -5 points or
    a commit of -5 failed the database's check and with it every operation of the batch (an
    unrelated earn included, as 'internal'), and a negative ttl made a hold born expired."""
    w, m = ledger_world, ledger_world.members[1]
    await fund(w, m, 100)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 10, 60_000, w.origin))).ok
    before = await balance(w, m)
    bad = [
        Reserve(unique("r"), m, 0, 60_000, w.origin),
        Reserve(unique("r"), m, -5, 60_000, w.origin),
        Reserve(unique("r"), m, 1, -1, w.origin),
        Reserve(unique("r"), m, 1, 10**13, w.origin),
        Commit(unique("c"), m, hold, -5, w.origin),
        Earn(unique("e"), m, 2**63, w.origin),
    ]
    good = Earn(unique("e"), m, 7, w.origin)
    futures = [w.ledger.submit(op) for op in (*bad, good)]  # one lane, one batch
    outs = await asyncio.gather(*futures)
    for op, out in zip(bad, outs, strict=False):
        assert not out.ok and out.error.code == ErrorCode.INVALID_FIELD.value, (op, out)
    assert outs[-1].ok, outs[-1]
    posted, held, version = before
    assert await balance(w, m) == (posted + 7, held, version + 1)
    await check_invariants(w.db, [m])


async def test_past_its_capacity_a_lane_refuses_new_operations_at_once(
    ledger_world: LedgerWorld, pg_dsn: str
):
    """A lane whose oldest queued operation has waited past ``max_queue_wait`` refuses new
    ones at once, retryable and unapplied, instead of queueing them behind it: in one bench
    run a cluster past its capacity queued every till for up to 11 s. What was queued before
    still runs, and the refused one applies once retried."""
    from gateway.ledger import Ledger
    from gateway.settings import LedgerSettings

    w, (m, n) = ledger_world, ledger_world.members[:2]
    await fund(w, m, 100)
    await fund(w, n, 100)
    ledger = Ledger(pg_dsn, LedgerSettings(lanes=1, max_queue_wait=0.2), None)
    await ledger.start()
    blocker = await asyncpg.connect(pg_dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM accounts WHERE member_id = $1 FOR UPDATE", m)
        stuck = ledger.submit(Earn(unique("e"), m, 1, w.origin))  # its batch waits on the lock
        await asyncio.sleep(0.05)
        queued = ledger.submit(Earn(unique("e"), n, 2, w.origin))  # queued behind it
        await asyncio.sleep(0.3)  # the queue has now waited past 0.2 s
        late = Earn(unique("e"), n, 3, w.origin)
        shed = ledger.submit(late)
        assert shed.done(), "refused at once, not queued"
        with pytest.raises(GatewayError) as refused:
            await shed
        assert refused.value.code == ErrorCode.UNAVAILABLE and refused.value.retryable
        assert ledger.stats.shed == 1
        await blocker.execute("COMMIT")
        assert (await asyncio.wait_for(stuck, 10)).ok
        assert (await asyncio.wait_for(queued, 10)).ok
        assert (await ledger.execute(late)).ok  # the retry, once the lane caught up
    finally:
        await blocker.close()
        await ledger.close()
    assert await balance(w, n) == (105, 0, 3)  # 100, +2, +3: nothing twice, nothing lost
    await check_invariants(w.db, [m, n])


async def test_each_batch_reports_its_queue_statement_and_commit_times(
    ledger_world: LedgerWorld, pg_dsn: str
):
    """``gateway_ledger_batch_seconds`` tells a slow disk (commit) from lock waits
    (statements) and a busy lane (queue). A batch held on a row lock spends that time in its
    statements; the batch queued behind it spends it in the queue; both commit fast."""
    from gateway.ledger import Ledger
    from gateway.settings import LedgerSettings

    w, (m, n) = ledger_world, ledger_world.members[:2]
    await fund(w, m, 100)
    await fund(w, n, 100)
    timed: list[tuple[float, float, float]] = []
    ledger = Ledger(pg_dsn, LedgerSettings(lanes=1), None, on_batch=lambda *p: timed.append(p))
    await ledger.start()
    blocker = await asyncpg.connect(pg_dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM accounts WHERE member_id = $1 FOR UPDATE", m)
        held = ledger.submit(Earn(unique("e"), m, 1, w.origin))
        await asyncio.sleep(0.05)
        behind = ledger.submit(Earn(unique("e"), n, 2, w.origin))
        await asyncio.sleep(0.3)
        await blocker.execute("COMMIT")
        assert (await held).ok and (await behind).ok
    finally:
        await blocker.close()
        await ledger.close()
    assert len(timed) == 2, timed
    (queue1, statements1, commit1), (queue2, statements2, commit2) = timed
    assert statements1 >= 0.3 and queue1 < 0.1, timed[0]
    assert queue2 >= 0.25 and statements2 < 0.25, timed[1]
    assert 0 < commit1 < 0.25 and 0 < commit2 < 0.25, timed


async def test_an_operation_carrying_rows_of_a_kind_the_ledger_was_not_given_is_refused(
    ledger_world: LedgerWorld,
) -> None:
    """Another package's rows ride on an operation only if the node gave the ledger their kind
    (its statement is part of the batch's): anything else fails alone, applying nothing."""
    from gateway.ledger import AttachmentKind

    stranger = AttachmentKind("stranger", "SELECT 1")

    class Row:
        kind = stranger

        def row(self, op, outcome):  # type: ignore[no-untyped-def]
            return {"x": 1}

    w, m = ledger_world, ledger_world.members[0]
    before = await balance(w, m)
    with pytest.raises(GatewayError, match="attachment kind"):
        await w.ledger.execute(Earn(unique("e"), m, 5, w.origin, attached=(Row(),)))
    assert await balance(w, m) == before


async def test_the_ticket_of_an_operation_is_told_once_it_is_queued(
    ledger_world: LedgerWorld,
) -> None:
    """A session's next mutating command may go once this one's operation is in its lane
    (``Origin.ticket``, the session's ordering): told at submit, before the commit."""
    import dataclasses

    told: list[str] = []

    class Ticket:
        def queued(self) -> None:
            told.append("queued")

    w, m = ledger_world, ledger_world.members[0]
    origin = dataclasses.replace(w.origin, ticket=Ticket())
    fut = w.ledger.submit(Earn(unique("e"), m, 5, origin))
    assert told == ["queued"] and not fut.done()
    assert (await fut).ok
