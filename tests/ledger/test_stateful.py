"""A hypothesis state machine over the real ledger (PostgreSQL + Redis): reserve, partial and
full commit, release, expiry (lazy and swept), earn, merging member 1 into member 0 (once),
retries with the same id, retries with a changed id, and losing Redis (flush, with and without a rebuild). After every step, the
database must equal a simple model and every invariant must hold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.fanout import Publisher
from gateway.ledger import (
    Commit,
    Earn,
    Expire,
    Ledger,
    Merge,
    Op,
    Origin,
    Reads,
    Release,
    Reserve,
    rebuild_cache,
)
from gateway.members import create_members
from gateway.programme import create_merchant
from gateway.settings import LedgerSettings
from gateway.store.keys import Keys
from protocol.codes import ErrorCode
from protocol.messages import Outcome
from tests.conftest import REDIS_URL, unique
from tests.ledger.conftest import check_invariants

PG_DSN: str = ""
PREFIX: str = ""


@dataclass
class ModelHold:
    member: str
    amount: int
    status: str = "active"
    overdue: bool = False


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"{PREFIX}:{unique('sm')}"
        self.keys = Keys(self.prefix)
        self.merchant = unique("mer")
        self.members = [unique("mem"), unique("mem")]
        self.origin = Origin(self.merchant, "pos", "s", "t")
        self.posted = dict.fromkeys(self.members, 0)
        self.held = dict.fromkeys(self.members, 0)
        #: A return's clawback the available points could not cover, owed (see apply._recover).
        self.owed = dict.fromkeys(self.members, 0)
        self.holds: dict[str, ModelHold] = {}
        self.done: list[tuple[Op, Outcome]] = []
        self.merged = False
        self.loop.run_until_complete(self._setup())

    async def _setup(self) -> None:
        self.db = await asyncpg.connect(PG_DSN)
        self.redis = aioredis.Redis.from_url(REDIS_URL)
        await create_merchant(self.db, self.merchant)
        await create_members(self.db, self.merchant, self.members)
        self.ledger = Ledger(PG_DSN, LedgerSettings(lanes=1), Publisher(self.redis, self.keys))
        await self.ledger.start()
        self.pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=2)
        self.reads = Reads(self.pool, self.redis, self.keys)

    def teardown(self) -> None:
        async def down() -> None:
            await self.ledger.close()
            await self.redis.delete(
                self.keys.epoch(), *(self.keys.balance(m) for m in self.members)
            )
            await self.redis.aclose()
            await self.pool.close()
            await self.db.close()

        self.loop.run_until_complete(down())
        self.loop.close()

    # ------------------------------------------------------------------ helpers
    def run(self, op: Op) -> Outcome:
        return self.loop.run_until_complete(self.ledger.execute(op))

    def settle(self, *members: str) -> None:
        """After a rule updated the model for its operation: the ledger's recovery."""
        for m in members:
            self.recover(m)

    def touch(self, member: str) -> None:
        """Model of lazy expiry: any applied operation on a member expires its overdue holds."""
        for h in self.holds.values():
            if h.member == member and h.status == "active" and h.overdue:
                h.status = "expired"
                self.held[member] -= h.amount

    def recover(self, member: str) -> None:
        """Model of recovery: after any operation, what is owed is taken from what is available."""
        take = min(self.owed[member], self.avail(member))
        self.owed[member] -= take
        self.posted[member] -= take

    def avail(self, member: str) -> int:
        return self.posted[member] - self.held[member]

    def expect_refusal(self, out: Outcome, code: ErrorCode) -> None:
        assert not out.ok and out.error is not None and out.error.code == code.value, out

    def refused_as_merged(self, member: str, out: Outcome) -> bool:
        """After the merge, member 1 refuses everything (not recorded: no retry checks)."""
        if self.merged and member == self.members[1]:
            self.expect_refusal(out, ErrorCode.MEMBER_MERGED)
            return True
        return False

    def active_holds(self) -> list[str]:
        # Creation order, not id order: ids are random, and draws must replay identically.
        return [k for k, h in self.holds.items() if h.status == "active"]

    # ------------------------------------------------------------------ rules
    @rule(i=st.integers(0, 1), points=st.integers(1, 500))
    def earn(self, i: int, points: int) -> None:
        m = self.members[i]
        op = Earn(unique("e"), m, points, self.origin)
        out = self.run(op)
        if self.refused_as_merged(m, out):
            return
        self.touch(m)
        self.settle(m)  # before the operation too
        assert out.ok
        self.posted[m] += points
        self.settle(m)
        self.done.append((op, out))

    @rule(i=st.integers(0, 1), points=st.integers(1, 700))
    def give_back(self, i: int, points: int) -> None:
        """A return's clawback: capped at what is available, the rest owed."""
        m = self.members[i]
        op = Earn(unique("rt"), m, -points, self.origin, kind="return", clamp=True, owe=True)
        out = self.run(op)
        if self.refused_as_merged(m, out):
            return
        self.touch(m)
        self.settle(m)  # before the operation too
        assert out.ok, out
        take = min(points, self.avail(m))
        assert out.data.points == -take, out
        self.posted[m] -= take
        self.owed[m] += points - take
        self.settle(m)
        self.done.append((op, out))

    @rule(i=st.integers(0, 1), points=st.integers(1, 700))
    def reserve(self, i: int, points: int) -> None:
        m = self.members[i]
        op = Reserve(unique("h"), m, points, 600_000, self.origin)
        out = self.run(op)
        if self.refused_as_merged(m, out):
            return
        self.touch(m)
        self.settle(m)  # before the operation too
        if self.avail(m) >= points:
            assert out.ok, out
            self.held[m] += points
            self.holds[op.op] = ModelHold(m, points)
        else:
            self.expect_refusal(out, ErrorCode.INSUFFICIENT_POINTS)
        self.settle(m)
        self.done.append((op, out))

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), partial=st.booleans(), over=st.booleans())
    def commit(self, data: st.DataObject, partial: bool, over: bool) -> None:
        hold_id = data.draw(st.sampled_from(list(self.holds)))
        h = self.holds[hold_id]
        amount = None
        if partial:
            amount = (
                data.draw(st.integers(1, h.amount + 5))
                if over
                else data.draw(st.integers(1, h.amount))
            )
        op = Commit(unique("c"), h.member, hold_id, amount, self.origin)
        out = self.run(op)
        if self.refused_as_merged(h.member, out):  # a hold left on the duplicate (expired)
            return
        self.touch(h.member)
        self.settle(h.member)  # before the operation too
        if h.status == "expired":
            self.expect_refusal(out, ErrorCode.HOLD_EXPIRED)
        elif h.status != "active":
            self.expect_refusal(out, ErrorCode.HOLD_NOT_ACTIVE)
        elif amount is not None and amount > h.amount:
            self.expect_refusal(out, ErrorCode.COMMIT_EXCEEDS_HOLD)
        else:
            assert out.ok, out
            take = h.amount if amount is None else amount
            self.posted[h.member] -= take
            self.held[h.member] -= h.amount
            h.status = "committed"
        self.settle(h.member)
        self.done.append((op, out))

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(list(self.holds)))
        h = self.holds[hold_id]
        op = Release(unique("r"), h.member, hold_id, self.origin)
        out = self.run(op)
        if self.refused_as_merged(h.member, out):  # a hold left on the duplicate (expired)
            return
        self.touch(h.member)
        self.settle(h.member)  # before the operation too
        if h.status == "expired":
            self.expect_refusal(out, ErrorCode.HOLD_EXPIRED)
        elif h.status != "active":
            self.expect_refusal(out, ErrorCode.HOLD_NOT_ACTIVE)
        else:
            assert out.ok, out
            self.held[h.member] -= h.amount
            h.status = "released"
        self.settle(h.member)
        self.done.append((op, out))

    @precondition(lambda self: not self.merged)
    @rule()
    def merge(self) -> None:
        """Member 1 is merged into member 0: its points and active holds move."""
        survivor, source = self.members
        op = Merge(unique("mg"), survivor, source, self.origin)
        out = self.run(op)
        assert out.ok, out
        self.touch(survivor)
        self.settle(survivor)  # before the operation too
        self.touch(source)
        self.posted[survivor] += self.posted[source]
        self.held[survivor] += self.held[source]
        self.posted[source] = self.held[source] = 0
        self.owed[survivor] += self.owed[source]
        self.owed[source] = 0
        for h in self.holds.values():
            if h.member == source and h.status == "active":
                h.member = survivor
        self.merged = True
        self.settle(survivor)
        self.done.append((op, out))

    @precondition(lambda self: self.active_holds())
    @rule(data=st.data(), sweep=st.booleans())
    def time_passes_past_expiry(self, data: st.DataObject, sweep: bool) -> None:
        """A hold's expiry passes. It then counts as expired at once (a commit is refused), and
        the sweeper (or the next operation on the member) releases its points."""
        hold_id = data.draw(st.sampled_from(self.active_holds()))
        h = self.holds[hold_id]
        self.loop.run_until_complete(
            self.db.execute(
                "UPDATE holds SET expires_at = clock_timestamp() - interval '1 ms' "
                "WHERE merchant_id=$1 AND id=$2",
                self.merchant,
                hold_id,
            )
        )
        h.overdue = True
        if sweep:
            out = self.run(Expire(h.member, self.origin))
            assert out.ok
            self.touch(h.member)
            self.settle(h.member)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def retry_same_id(self, data: st.DataObject) -> None:
        op, first = data.draw(st.sampled_from(self.done))
        again = self.run(op)
        assert again == first, (op, first, again)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def retry_changed_id(self, data: st.DataObject) -> None:
        op, _ = data.draw(st.sampled_from(self.done))
        if isinstance(op, Earn):
            changed: Op = Earn(op.op, op.member, op.points + 1, op.origin)
        elif isinstance(op, Reserve):
            changed = Reserve(op.op, op.member, op.points + 1, op.ttl_ms, op.origin)
        elif isinstance(op, Commit):
            changed = Commit(op.op, op.member, op.hold, (op.points or 0) + 1, op.origin)
        elif isinstance(op, Merge):
            changed = Merge(op.op, op.source, op.member, op.origin)
        else:
            assert isinstance(op, Release)
            changed = Release(op.op, op.member, op.hold + "x", op.origin)
        self.expect_refusal(self.run(changed), ErrorCode.IDEMPOTENCY_CONFLICT)

    @rule(rebuild=st.booleans())
    def lose_redis(self, rebuild: bool) -> None:
        async def flush() -> None:
            # Everything this machine keeps in Redis under its prefix: its members' balances
            # and the cache's epoch (a restart loses both).
            await self.redis.delete(
                self.keys.epoch(), *(self.keys.balance(m) for m in self.members)
            )
            if rebuild:
                await rebuild_cache(PG_DSN, self.redis, self.keys)

        self.loop.run_until_complete(flush())

    # ------------------------------------------------------------------ invariants
    @invariant()
    def database_matches_model_and_invariants_hold(self) -> None:
        async def check() -> None:
            await self.ledger.published()
            for m in self.members:
                row = await self.db.fetchrow(
                    "SELECT posted, held, owed FROM accounts WHERE member_id=$1", m
                )
                assert (row["posted"], row["held"]) == (self.posted[m], self.held[m]), m
                assert row["owed"] == self.owed[m], m
                assert row["owed"] == 0 or row["posted"] == row["held"], m
            await check_invariants(self.db, self.members)
            for m in self.members:
                # a read never shows a wrong balance, with or without the cache; after two
                # reads (the first may only learn a new epoch) the cache serves it
                for _ in range(2):
                    bal = await self.reads.balance(m)
                    assert bal is not None
                    assert (bal.posted, bal.held) == (self.posted[m], self.held[m])
                cached = await self.redis.hgetall(self.keys.balance(m))
                assert int(cached[b"v"]) >= int(cached.get(b"f", -1)), cached
                if cached:
                    v = int(cached[b"v"])
                    db_v = await self.db.fetchval(
                        "SELECT version FROM accounts WHERE member_id=$1", m
                    )
                    assert v == db_v
                    assert (int(cached[b"p"]), int(cached[b"h"])) == (self.posted[m], self.held[m])

        self.loop.run_until_complete(check())


def test_ledger_state_machine(pg_dsn: str, redis_prefix: str) -> None:
    global PG_DSN, PREFIX
    PG_DSN, PREFIX = pg_dsn, redis_prefix
    LedgerMachine.TestCase.settings = settings(
        max_examples=30,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    LedgerMachine.TestCase().runTest()
