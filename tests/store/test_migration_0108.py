"""Migration 0108 adds a unique index on (merchant_id, redeemed_op); the code before it let
one use_code op redeem two codes (the bug 06f5b62 fixes), so a database holding such rows
cannot be migrated."""

from __future__ import annotations

import uuid

import asyncpg

from gateway.store import migrate as mig
from tests.conftest import BASE_DSN, _admin, _server_dsn


async def test_0108_migrates_a_database_where_one_op_redeemed_two_codes(monkeypatch):
    name = f"lg_review_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    dsn = _server_dsn(BASE_DSN, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            everything = mig.available()
            monkeypatch.setattr(mig, "available", lambda: [f for f in everything if f[0] < "0108"])
            await mig.migrate(conn)
            await conn.execute("INSERT INTO merchants (id, name) VALUES ('acme', 'acme')")
            await conn.execute("INSERT INTO members (id, merchant_id) VALUES ('m1', 'acme')")
            for code, issue in (("AAAA", "i1"), ("BBBB", "i2")):
                await conn.execute(
                    """INSERT INTO reward_codes (merchant_id, code, member_id, reward_id, points,
                                                 status, issue_op, expires_at, redeemed_op)
                       VALUES ('acme', $1, 'm1', 'r', 10, 'redeemed', $2, now(), 'u1')""",
                    code,
                    issue,
                )
            monkeypatch.setattr(mig, "available", lambda: everything)
            await mig.migrate(conn)  # UniqueViolationError: could not create unique index
        finally:
            await conn.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
