"""The lanes' plans find rows by key, whatever the statistics said when they were made.

A lane plans each batch statement once per connection (generic plans) and keeps that plan
while its tables grow. Planned on a young database, a commit's hold lookup was a sequential
scan and hash join over every hold, slower with every hold ever made. These tests make the
plans on a brand-new database (tables never analyzed), on one analyzed while empty, and on
one with rows, and check that every table is reached through an index condition.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway import purchases, webhooks
from gateway.ledger import queries as q
from tests.conftest import BASE_DSN, _server_dsn, create_database, drop_database

#: The statements a lane runs, by name: the batch statement as a node composes it, with the
#: rows other packages attach to its operations (a sale's history, a return's state) and the
#: statements they run over its entries (the webhooks' events).
STATEMENTS = {
    "LOCK_AND_FIND": q.LOCK_AND_FIND,
    "FIND_OPS_AND_HOLDS": q.FIND_OPS_AND_HOLDS,
    "WRITE_BATCH": q.write_batch(
        [(k.name, k.sql) for k in purchases.ATTACHMENTS],
        [(t.name, t.sql) for t in webhooks.TAPS],
    ),
}
#: Tables a lane statement reads: each must be read through an index condition.
TABLES = ("accounts", "operations", "holds", "sale_returns", "webhook_endpoints")


@pytest.fixture
async def fresh_db() -> AsyncIterator[asyncpg.Connection]:
    """A database of its own, just migrated: no statistics yet."""
    name = f"lg_plans_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(await create_database(name))
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await drop_database(name)


async def generic_plans(conn: asyncpg.Connection) -> dict[str, str]:
    """Each lane statement's generic plan, made under the lanes' settings on a new session."""
    dsn = _server_dsn(BASE_DSN, await conn.fetchval("SELECT current_database()"))
    lane = await asyncpg.connect(dsn)
    try:
        await lane.execute(q.LANE_SETTINGS)
        plans = {}
        for name, sql in STATEMENTS.items():
            stmt = await lane.prepare(sql)
            types = [
                t.name[1:] + "[]" if t.name.startswith("_") else t.name
                for t in stmt.get_parameters()
            ]
            await lane.execute(f"PREPARE p_{name.lower()}({', '.join(types)}) AS {sql}")
            nulls = ", ".join("NULL" for _ in types)
            rows = await lane.fetch(f"EXPLAIN EXECUTE p_{name.lower()}({nulls})")
            plans[name] = "\n".join(r[0] for r in rows)
        return plans
    finally:
        await lane.close()


def assert_key_lookups(plans: dict[str, str]) -> None:
    for name, plan in plans.items():
        for bad in ("Seq Scan", "Hash Join", "Merge Join"):
            assert bad not in plan, f"{name} plans a {bad}:\n{plan}"
        # The sweeper's index: a lookup by member that walks it reads every active hold.
        assert "holds_active_by_expiry" not in plan, f"{name} reads the sweeper's index:\n{plan}"
        # A join on a key compared row by row: every row of one side against every row of
        # the other, quadratic in the batch (the accounts update, before $47).
        pair = re.search(r"Join Filter: \(+\w+\.(\w+) = \w+\.(\w+)\)", plan)
        assert pair is None, f"{name} joins by key row against row ({pair.group(0)}):\n{plan}"
        lines = plan.splitlines()
        for i, line in enumerate(lines):
            m = re.search(r"Index (?:Only )?Scan (?:Backward )?using \w+ on (\w+)", line)
            bitmap = "Bitmap Index Scan on" in line
            if not bitmap and (m is None or m.group(1) not in TABLES):
                continue
            # The scan's detail lines (indented deeper) must carry an index condition.
            depth = len(line) - len(line.lstrip())
            detail = []
            for nxt in lines[i + 1 :]:
                if len(nxt) - len(nxt.lstrip()) <= depth:
                    break
                detail.append(nxt)
            assert any("Index Cond" in d for d in detail), (
                f"{name} walks a whole index without a key ({line.strip()}):\n{plan}"
            )


async def test_lane_plans_are_key_lookups_on_a_new_database(fresh_db: asyncpg.Connection) -> None:
    assert_key_lookups(await generic_plans(fresh_db))


async def test_lane_plans_are_key_lookups_after_analyzing_empty_tables(
    fresh_db: asyncpg.Connection,
) -> None:
    await fresh_db.execute("ANALYZE")
    assert_key_lookups(await generic_plans(fresh_db))


async def test_lane_plans_are_key_lookups_on_tables_with_rows(
    fresh_db: asyncpg.Connection,
) -> None:
    await fresh_db.execute("INSERT INTO merchants (id, name) VALUES ('m', 'm')")
    await fresh_db.execute(
        """INSERT INTO members (id, merchant_id) SELECT 'u' || g, 'm' FROM generate_series(1, 2000) g;
           INSERT INTO accounts (member_id, merchant_id)
                SELECT 'u' || g, 'm' FROM generate_series(1, 2000) g;
           INSERT INTO holds (merchant_id, id, member_id, amount, committed, status, expires_at,
                              created_at, resolved_at)
                SELECT 'm', 'h' || g, 'u' || (g % 2000 + 1), 1, 1,
                       CASE WHEN g % 10 = 0 THEN 'active' ELSE 'committed' END,
                       now() + interval '1 minute', now(), now()
                  FROM generate_series(1, 20000) g;
           ANALYZE;"""
    )
    assert_key_lookups(await generic_plans(fresh_db))


async def test_the_sweeper_reads_overdue_holds_by_expiry(fresh_db: asyncpg.Connection) -> None:
    """holds_active_by_expiry's predicate is one only the sweeper's query states."""
    await fresh_db.execute("SET enable_seqscan = off")
    rows = await fresh_db.fetch(f"EXPLAIN {q.OVERDUE_MEMBERS.replace('$1', '100')}")
    plan = "\n".join(r[0] for r in rows)
    assert "holds_active_by_expiry" in plan, plan


async def test_a_lookup_by_member_cannot_use_the_sweepers_index(
    fresh_db: asyncpg.Connection,
) -> None:
    """Whatever the statistics, the sweeper's index is not a way to a member's holds: without
    holds_active_by_member the only plan left is a (disabled) sequential scan."""
    await fresh_db.execute("DROP INDEX holds_active_by_member")
    plans = await generic_plans(fresh_db)
    for name in ("LOCK_AND_FIND", "FIND_OPS_AND_HOLDS"):
        assert "holds_active_by_expiry" not in plans[name], plans[name]
        assert "Seq Scan on holds" in plans[name], plans[name]


#: What a lane planned on a young database before the lanes' settings (abridged).
_PLANNED_ON_A_YOUNG_DATABASE = """\
Append  (cost=143.55..256.32 rows=13 width=337)
  ->  Hash Join  (cost=0.26..32.77 rows=1 width=240)
        Hash Cond: ((h.merchant_id = k_1.merchant_id) AND (h.id = k_1.id))
        ->  Seq Scan on holds h  (cost=0.00..25.00 rows=1000 width=72)
        ->  Hash  (cost=0.11..0.11 rows=10 width=64)
              ->  Function Scan on k_1  (cost=0.01..0.11 rows=10 width=64)"""
#: What the same settings planned after ANALYZE of empty tables, before the lookups by key
#: were written as lateral subqueries (abridged).
_PLANNED_AFTER_ANALYZING_EMPTY_TABLES = """\
Append  (cost=17.50..42.60 rows=4 width=336)
  ->  Nested Loop  (cost=0.13..8.39 rows=1 width=336)
        Join Filter: ((o.merchant_id = k.merchant_id) AND (o.op_id = k.op_id))
        ->  Index Scan using operations_pkey on operations o  (cost=0.12..8.14 rows=1 width=128)
        ->  Function Scan on k  (cost=0.01..0.11 rows=10 width=64)"""


#: A lookup by member through the sweeper's index, planned under load while both partial
#: indexes on active holds had the same predicate (abridged; 18 ms for 23 members).
_PLANNED_UNDER_LOAD = """\
Nested Loop  (cost=0.34..43.32 rows=10 width=72)
  ->  HashAggregate  (cost=0.10..0.24 rows=10 width=32)
  ->  Index Scan using holds_active_by_expiry on holds h_1  (cost=0.25..4.28 rows=1 width=72)
        Filter: ((member_id = k.member_id) AND ((expires_at <= t_1.now) OR (member_id = ANY ($6))))"""


#: The accounts update as an UPDATE ... FROM unnest(...) join, planned on a database with rows
#: (abridged; 12.4 ms of a 34.8 ms write for a batch of 245 members).
_PLANNED_AS_A_JOIN = """\
Update on accounts a  (cost=0.30..62.01 rows=1 width=182)
  ->  Nested Loop  (cost=0.30..62.01 rows=1 width=182)
        Join Filter: (a.member_id = u.member_id)
        ->  Function Scan on u  (cost=0.01..0.11 rows=10 width=200)
        ->  Materialize  (cost=0.29..60.42 rows=10 width=11)
              ->  Index Scan using accounts_pkey on accounts a  (cost=0.29..60.37 rows=10 width=11)
                    Index Cond: (member_id = ANY ($8))"""


@pytest.mark.parametrize(
    "plan",
    [
        _PLANNED_ON_A_YOUNG_DATABASE,
        _PLANNED_AFTER_ANALYZING_EMPTY_TABLES,
        _PLANNED_UNDER_LOAD,
        _PLANNED_AS_A_JOIN,
    ],
)
def test_the_check_rejects_the_plans_seen_before(plan: str) -> None:
    with pytest.raises(AssertionError):
        assert_key_lookups({"LOCK_AND_FIND": plan})
