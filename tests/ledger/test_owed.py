"""A return's clawback that the member's available points cannot cover is owed, and taken from
the next points that become available: a released or expired hold, a refund, an earn, a merge.
Found in review: the uncollected part was forgotten, so a till could reserve every point, return
the sale (nothing collected: all held), then release the hold and keep the points."""

from __future__ import annotations

from gateway.ledger import Commit, Earn, Merge, Release, Reserve
from tests.conftest import unique
from tests.ledger.conftest import LedgerWorld, check_invariants
from tests.ledger.test_engine import balance, fund


def clawback(w: LedgerWorld, member: str, points: int) -> Earn:
    """A return's reversal, as the loyalty service posts it."""
    return Earn(unique("ret"), member, -points, w.origin, kind="return", clamp=True, owe=True)


async def owed(w: LedgerWorld, member: str) -> int:
    return int(await w.db.fetchval("SELECT owed FROM accounts WHERE member_id = $1", member))


async def recoveries(w: LedgerWorld, member: str) -> list[int]:
    rows = await w.db.fetch(
        "SELECT posted_delta FROM ledger_entries WHERE member_id = $1 AND kind = 'recovery'"
        " ORDER BY version",
        member,
    )
    return [r["posted_delta"] for r in rows]


async def test_a_released_hold_pays_what_a_return_could_not_take(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[0]
    await fund(w, m, 100)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 100, 60_000, w.origin))).ok
    back = await w.ledger.execute(clawback(w, m, 100))
    assert back.ok and back.data.points == 0  # all of it was held: nothing taken now
    assert await owed(w, m) == 100
    out = await w.ledger.execute(Release(unique("r"), m, hold, w.origin))
    assert out.ok
    assert (out.data.balance.posted, out.data.balance.available) == (0, 0)  # not 100
    assert await balance(w, m) == (0, 0, 4)
    assert await owed(w, m) == 0 and await recoveries(w, m) == [-100]
    await check_invariants(w.db, [m])


async def test_later_points_pay_the_debt_first_then_count(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[1]
    await fund(w, m, 50)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 50, 60_000, w.origin))).ok
    assert (await w.ledger.execute(Commit(unique("c"), m, hold, 50, w.origin))).ok  # spent
    assert (await w.ledger.execute(clawback(w, m, 80))).data.points == 0
    assert await owed(w, m) == 80
    out = await w.ledger.execute(Earn(unique("e"), m, 30, w.origin))  # a refund, a sale ...
    assert out.ok and out.data.points == 30 and out.data.balance.available == 0
    assert await owed(w, m) == 50
    out = await w.ledger.execute(Earn(unique("e"), m, 70, w.origin))
    assert out.data.balance.available == 20 and await owed(w, m) == 0
    assert await recoveries(w, m) == [-30, -50]
    # while owing, nothing could be reserved; now the rest is the member's
    assert (await w.ledger.execute(Reserve(unique("h"), m, 20, 60_000, w.origin))).ok
    await check_invariants(w.db, [m])


async def expire_now(w: LedgerWorld, hold: str) -> None:
    await w.db.execute(
        "UPDATE holds SET expires_at = clock_timestamp() - interval '1 ms'"
        " WHERE merchant_id = $1 AND id = $2",
        w.merchant,
        hold,
    )


async def test_an_expired_hold_pays_the_debt(ledger_world: LedgerWorld):
    w, m = ledger_world, ledger_world.members[2]
    await fund(w, m, 60)
    first, second = unique("h"), unique("h")
    assert (await w.ledger.execute(Reserve(first, m, 60, 60_000, w.origin))).ok
    await expire_now(w, first)
    # the hold expires lazily in this batch, before the return: 60 collected, 0 owed
    assert (await w.ledger.execute(clawback(w, m, 60))).data.points == -60
    assert await owed(w, m) == 0
    await fund(w, m, 40)
    assert (await w.ledger.execute(Reserve(second, m, 40, 60_000, w.origin))).ok
    assert (await w.ledger.execute(clawback(w, m, 25))).data.points == 0  # held: owed
    await expire_now(w, second)
    out = await w.ledger.execute(Earn(unique("e"), m, 5, w.origin))  # expires it lazily
    assert out.data.balance.available == 20 and await owed(w, m) == 0
    assert await recoveries(w, m) == [-25]
    await check_invariants(w.db, [m])


async def test_a_merged_duplicates_debt_is_owed_by_the_survivor(ledger_world: LedgerWorld):
    w = ledger_world
    survivor, source = w.members[3], unique("mem")
    from gateway.members import create_members

    await create_members(w.db, w.merchant, [source])
    await fund(w, source, 10)
    assert (await w.ledger.execute(Reserve(unique("h"), source, 10, 60_000, w.origin))).ok
    assert (await w.ledger.execute(clawback(w, source, 30))).data.points == 0
    assert await owed(w, source) == 30
    await fund(w, survivor, 100)
    out = await w.ledger.execute(Merge(unique("m"), survivor, source, w.origin))
    assert out.ok
    # the survivor has 100 + 10 posted, 10 held: 30 of its 100 available pay the debt
    assert (out.data.posted, out.data.held, out.data.available) == (80, 10, 70)
    assert await owed(w, source) == 0 and await owed(w, survivor) == 0
    await check_invariants(w.db, [survivor, source])


async def test_points_freed_by_lazy_expiry_are_taken_before_the_operation_spends_them(
    ledger_world: LedgerWorld,
):
    """Found in review: recovery ran after the operation, so a reserve whose own lazy expiry
    freed a hold's points (the sweeper had not run yet) could reserve the points the member
    owed, leaving nothing to recover."""
    w, m = ledger_world, ledger_world.members[0]
    await fund(w, m, 100)
    hold = unique("h")
    assert (await w.ledger.execute(Reserve(hold, m, 100, 60_000, w.origin))).ok
    assert (await w.ledger.execute(clawback(w, m, 100))).data.points == 0
    assert await owed(w, m) == 100
    await expire_now(w, hold)
    out = await w.ledger.execute(Reserve(unique("h"), m, 100, 60_000, w.origin))
    assert out.error is not None and out.error.code == "insufficient_points"
    assert await balance(w, m) == (0, 0, 4) and await owed(w, m) == 0
    await check_invariants(w.db, [m])


async def test_an_account_left_owing_with_points_by_an_older_node_pays_first(
    ledger_world: LedgerWorld,
):
    """A node of the previous release (during a rollout) releases and earns without recovery:
    the next operation here takes what is owed before it spends anything."""
    w, m = ledger_world, ledger_world.members[1]
    await fund(w, m, 100)
    await w.db.execute("UPDATE accounts SET owed = 30 WHERE member_id = $1", m)
    out = await w.ledger.execute(Reserve(unique("h"), m, 80, 60_000, w.origin))
    assert out.error is not None and out.error.code == "insufficient_points"
    assert await balance(w, m) == (70, 0, 2) and await owed(w, m) == 0
    assert (await w.ledger.execute(Reserve(unique("h"), m, 70, 60_000, w.origin))).ok
