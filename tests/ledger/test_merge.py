"""Merging a duplicate member into a survivor: the ledger operation (``Merge``) against the
real PostgreSQL and Redis: balances and holds move, invariants hold, both changes are
published, retries replay, and the merged member refuses every later operation."""

from __future__ import annotations

import asyncio

import msgspec

from gateway.ledger import Commit, Earn, Merge, Origin, Release, Reserve
from protocol.codes import ErrorCode
from protocol.messages import BalanceChanged
from tests.conftest import unique
from tests.ledger.conftest import LedgerWorld, check_invariants
from tests.ledger.test_engine import balance, fund


async def test_merge_moves_points_and_holds_and_publishes_both_sides(ledger_world: LedgerWorld):
    w = ledger_world
    survivor, source = w.members[0], w.members[1]
    await fund(w, survivor, 100)
    await fund(w, source, 700)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, source, 200, 60_000, w.origin))).ok
    pubsub = w.redis.pubsub()
    await pubsub.subscribe(w.keys.member_channel(source), w.keys.member_channel(survivor))
    await pubsub.get_message(timeout=1)
    await pubsub.get_message(timeout=1)

    op = unique("merge")
    out = await w.ledger.execute(Merge(op, survivor, source, w.origin))
    assert out.ok, out
    assert (out.data.member, out.data.posted, out.data.held, out.data.version) == (
        survivor,
        800,
        200,
        2,
    )
    assert await balance(w, source) == (0, 0, 3)
    assert await balance(w, survivor) == (800, 200, 2)
    assert (
        await w.db.fetchval("SELECT merged_into FROM accounts WHERE member_id = $1", source)
        == survivor
    )
    assert (
        await w.db.fetchval(
            "SELECT member_id FROM holds WHERE merchant_id = $1 AND id = $2", w.merchant, hold
        )
        == survivor
    )
    kinds = await w.db.fetch(
        """SELECT member_id, kind, posted_delta, held_delta FROM ledger_entries
            WHERE op_id = $1 ORDER BY member_id = $2""",
        op,
        survivor,
    )
    assert [tuple(r) for r in kinds] == [
        (source, "merge_out", -700, -200),
        (survivor, "merge_in", 700, 200),
    ]
    await check_invariants(w.db, [source, survivor])

    seen: dict[str, BalanceChanged] = {}
    async with asyncio.timeout(5):
        while len(seen) < 2:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg is not None:
                frame = msgspec.json.decode(msg["data"], type=BalanceChanged)
                if frame.cause.op == op:
                    seen[frame.member] = frame
    await pubsub.aclose()
    assert (seen[source].cause.kind, seen[source].available, seen[source].version) == (
        "merge_out",
        0,
        3,
    )
    assert (seen[survivor].cause.kind, seen[survivor].posted, seen[survivor].held) == (
        "merge_in",
        800,
        200,
    )

    # The hold now belongs to the survivor: naming the merged source is refused with
    # member_merged (the message names the survivor); naming the survivor commits it.
    # The refusal is not recorded against the op id, so the same op can be sent again.
    commit_op = unique("c")
    c = await w.ledger.execute(Commit(commit_op, source, hold, 150, w.origin))
    assert not c.ok and c.error.code == ErrorCode.MEMBER_MERGED.value
    assert survivor in c.error.message
    c = await w.ledger.execute(Commit(commit_op, survivor, hold, 150, w.origin))
    assert c.ok and c.data.member == survivor and c.data.committed == 150
    assert await balance(w, survivor) == (650, 0, 3)
    await check_invariants(w.db, [source, survivor])


async def test_retry_replays_and_changed_content_conflicts(ledger_world: LedgerWorld):
    w = ledger_world
    survivor, source, third = w.members[0], w.members[1], w.members[2]
    await fund(w, source, 50)
    op = unique("merge")
    first = await w.ledger.execute(Merge(op, survivor, source, w.origin))
    assert first.ok
    again = await w.ledger.execute(Merge(op, survivor, source, w.origin))
    assert again == first
    assert await balance(w, survivor) == (50, 0, 1)
    other = await w.ledger.execute(Merge(op, survivor, third, w.origin))
    assert not other.ok and other.error.code == ErrorCode.IDEMPOTENCY_CONFLICT.value
    # a new op merging the same source again: it is merged already
    twice = await w.ledger.execute(Merge(unique("merge"), survivor, source, w.origin))
    assert not twice.ok and twice.error.code == ErrorCode.MEMBER_MERGED.value
    await check_invariants(w.db, [source, survivor, third])


async def test_refusals(ledger_world: LedgerWorld, db):
    w = ledger_world
    a, b, c = w.members[0], w.members[1], w.members[2]
    await fund(w, a, 10)
    await fund(w, b, 20)
    foreign_merchant = unique("mer")
    foreign = unique("mem")
    from gateway.members import create_members
    from gateway.programme import create_merchant

    await create_merchant(db, foreign_merchant)
    await create_members(db, foreign_merchant, [foreign])
    cases = [
        (Merge(unique("m"), a, a, w.origin), ErrorCode.INVALID_FIELD),
        (Merge(unique("m"), a, foreign, w.origin), ErrorCode.MEMBER_NOT_FOUND),
        (Merge(unique("m"), foreign, a, w.origin), ErrorCode.MEMBER_NOT_FOUND),
        (Merge(unique("m"), a, b, Origin(foreign_merchant)), ErrorCode.MEMBER_NOT_FOUND),
        (Merge(unique("m"), a, "no-such-member", w.origin), ErrorCode.MEMBER_NOT_FOUND),
        (Merge(unique("m"), "no-such-member", a, w.origin), ErrorCode.MEMBER_NOT_FOUND),
    ]
    for op, code in cases:
        out = await w.ledger.execute(op)
        assert not out.ok and out.error.code == code.value, (op, out)
    assert await balance(w, a) == (10, 0, 1) and await balance(w, b) == (20, 0, 1)

    # After b is merged into a: every operation naming b is refused, and b cannot be a
    # survivor either; an empty source (c) merges without entries.
    hold = unique("h")
    assert (await w.ledger.execute(Merge(unique("m"), a, b, w.origin))).ok
    for op in (
        Earn(unique("e"), b, 5, w.origin),
        Reserve(unique("r"), b, 1, 60_000, w.origin),
        Commit(unique("c"), b, hold, None, w.origin),
        Release(unique("r"), b, hold, w.origin),
        Merge(unique("m"), b, c, w.origin),
        Merge(unique("m"), a, b, w.origin),
    ):
        out = await w.ledger.execute(op)
        assert not out.ok and out.error.code == ErrorCode.MEMBER_MERGED.value, (op, out)
    assert (await w.ledger.execute(Merge(unique("m"), a, c, w.origin))).ok
    assert await balance(w, c) == (0, 0, 0)
    assert await balance(w, a) == (30, 0, 2)
    await check_invariants(w.db, [a, b, c])


async def test_released_and_overdue_holds_after_a_merge(ledger_world: LedgerWorld):
    w = ledger_world
    survivor, source = w.members[0], w.members[3]
    await fund(w, source, 300)
    live, short = unique("h"), unique("h")
    assert (await w.ledger.execute(Reserve(live, source, 100, 60_000, w.origin))).ok
    assert (await w.ledger.execute(Reserve(short, source, 50, 1, w.origin))).ok
    await asyncio.sleep(0.01)
    # the overdue hold expires on the source first; only the live one moves
    assert (await w.ledger.execute(Merge(unique("m"), survivor, source, w.origin))).ok
    assert await balance(w, survivor) == (300, 100, 1)
    assert (await w.ledger.execute(Release(unique("r"), survivor, live, w.origin))).ok
    assert await balance(w, survivor) == (300, 0, 2)
    await check_invariants(w.db, [source, survivor])


async def test_concurrent_merge_and_operations_on_both_members(ledger_world: LedgerWorld):
    w = ledger_world
    survivor, source = w.members[1], w.members[2]
    await fund(w, survivor, 1000)
    await fund(w, source, 1000)
    ops = [Earn(unique("e"), m, 1, w.origin) for _ in range(20) for m in (survivor, source)]
    ops.insert(17, Merge(unique("m"), survivor, source, w.origin))
    outs = await asyncio.gather(*(w.ledger.execute(o) for o in ops))
    assert outs[17].ok
    refused = [o for o in outs if not o.ok]
    assert all(o.error.code == ErrorCode.MEMBER_MERGED.value for o in refused)
    applied = sum(1 for o, out in zip(ops, outs, strict=True) if out.ok and isinstance(o, Earn))
    assert await w.db.fetchval("SELECT posted FROM accounts WHERE member_id = $1", survivor) == (
        2000 + applied
    )
    await check_invariants(w.db, [source, survivor])


async def test_a_hold_left_on_a_merged_duplicate_answers_for_its_own_state(
    ledger_world: LedgerWorld,
):
    """A merge moves only active holds. One that had expired, or was committed, on the
    duplicate stays there; a commit or release naming the survivor (or the survivor of a
    second merge) gets that hold's real state, while another member's hold stays not found."""
    w = ledger_world
    final, survivor, source, other = w.members[0], w.members[1], w.members[2], w.members[3]
    await fund(w, source, 300)
    await fund(w, other, 100)
    short, done, foreign = unique("h"), unique("h"), unique("h")
    assert (await w.ledger.execute(Reserve(short, source, 50, 1, w.origin))).ok
    assert (await w.ledger.execute(Reserve(done, source, 40, 60_000, w.origin))).ok
    assert (await w.ledger.execute(Commit(unique("c"), source, done, 40, w.origin))).ok
    assert (await w.ledger.execute(Reserve(foreign, other, 10, 60_000, w.origin))).ok
    await asyncio.sleep(0.01)
    assert (await w.ledger.execute(Merge(unique("m"), survivor, source, w.origin))).ok

    async def code(op: Commit | Release) -> ErrorCode | None:
        out = await w.ledger.execute(op)
        return None if out.error is None else ErrorCode(out.error.code)

    assert await code(Commit(unique("c"), survivor, short, 50, w.origin)) == ErrorCode.HOLD_EXPIRED
    assert await code(Release(unique("r"), survivor, short, w.origin)) == ErrorCode.HOLD_EXPIRED
    assert await code(Commit(unique("c"), survivor, done, 40, w.origin)) == (
        ErrorCode.HOLD_NOT_ACTIVE
    )
    assert await code(Commit(unique("c"), survivor, foreign, 10, w.origin)) == (
        ErrorCode.HOLD_NOT_FOUND
    )
    assert (await w.ledger.execute(Merge(unique("m"), final, survivor, w.origin))).ok
    assert await code(Commit(unique("c"), final, short, 50, w.origin)) == ErrorCode.HOLD_EXPIRED
    assert await code(Release(unique("r"), final, done, w.origin)) == ErrorCode.HOLD_NOT_ACTIVE
    assert await code(Release(unique("r"), other, short, w.origin)) == ErrorCode.HOLD_NOT_FOUND
    # nothing moved by any of the refusals
    assert await balance(w, final) == (260, 0, 1)
    assert await balance(w, other) == (100, 10, 2)
    await check_invariants(w.db, [final, survivor, source, other])
