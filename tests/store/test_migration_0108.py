"""Migration 0108 adds a unique index on (merchant_id, redeemed_op); the code before it let
one use_code op redeem two codes (the bug 06f5b62 fixes), so a database holding such rows
cannot be migrated."""

from __future__ import annotations

from gateway.store import migrate as mig
from tests.store.scratch import migrated_before


async def test_0108_migrates_a_database_where_one_op_redeemed_two_codes(monkeypatch):
    async with migrated_before("0108", monkeypatch) as conn:
        for code, issue in (("AAAA", "i1"), ("BBBB", "i2")):
            await conn.execute(
                """INSERT INTO reward_codes (merchant_id, code, member_id, reward_id, points,
                                             status, issue_op, expires_at, redeemed_op)
                   VALUES ('acme', $1, 'm1', 'r', 10, 'redeemed', $2, now(), 'u1')""",
                code,
                issue,
            )
        await mig.migrate(conn)  # UniqueViolationError: could not create unique index
