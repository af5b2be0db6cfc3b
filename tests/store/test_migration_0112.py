"""Migration 0112 stores each reward code's terms (name, kind, value, sku) with the code: codes
issued before it are filled from the catalogue, and codes inserted without them (by a node of
the previous release, during a rollout) take the catalogue's terms as they are inserted."""

from __future__ import annotations

import uuid

import asyncpg

from gateway.store import migrate as mig
from tests.conftest import BASE_DSN, _admin, _server_dsn

_OLD_INSERT = """INSERT INTO reward_codes (merchant_id, code, member_id, reward_id, points,
                                            status, issue_op, expires_at)
                 VALUES ('acme', $1, 'm1', $2, 10, 'issued', $3, now() + interval '1 day')"""
_TERMS = "SELECT name, kind, value, sku FROM reward_codes WHERE code = $1"
TEN = ("$10 off", "amount_off", 1000, None)
CUP = ("Free coffee", "free_item", 0, "latte")


async def test_0112_freezes_the_terms_of_codes_issued_before_and_during_the_rollout(
    monkeypatch,
):
    name = f"lg_review_{uuid.uuid4().hex[:10]}"
    await _admin(f'CREATE DATABASE "{name}"')
    dsn = _server_dsn(BASE_DSN, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            everything = mig.available()
            monkeypatch.setattr(mig, "available", lambda: [f for f in everything if f[0] < "0112"])
            await mig.migrate(conn)
            await conn.execute("INSERT INTO merchants (id, name) VALUES ('acme', 'acme')")
            await conn.execute("INSERT INTO members (id, merchant_id) VALUES ('m1', 'acme')")
            await conn.execute(
                """INSERT INTO rewards (merchant_id, id, name, cost, kind, value, sku) VALUES
                   ('acme', 'ten', '$10 off', 10, 'amount_off', 1000, NULL),
                   ('acme', 'cup', 'Free coffee', 10, 'free_item', 0, 'latte')"""
            )
            await conn.execute(_OLD_INSERT, "AAAA", "ten", "i1")
            await conn.execute(_OLD_INSERT, "GONE", "deleted-by-hand", "i2")
            monkeypatch.setattr(mig, "available", lambda: everything)
            assert "0112_reward_codes_frozen.sql" in await mig.migrate(conn)
            assert tuple(await conn.fetchrow(_TERMS, "AAAA")) == TEN
            assert tuple(await conn.fetchrow(_TERMS, "GONE")) == (None, None, None, None)
            # a node of the previous release issues a code after the migration ran
            await conn.execute(_OLD_INSERT, "BBBB", "cup", "i3")
            await conn.execute(
                """UPDATE rewards SET name = 'x', kind = 'percent_off', value = 100, sku = NULL
                    WHERE merchant_id = 'acme'"""
            )
            assert tuple(await conn.fetchrow(_TERMS, "AAAA")) == TEN
            assert tuple(await conn.fetchrow(_TERMS, "BBBB")) == CUP
        finally:
            await conn.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
