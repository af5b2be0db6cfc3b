"""Migration 0112 stores each reward code's terms (name, kind, value, sku) with the code: codes
issued before it are filled from the catalogue, and codes inserted without them (by a node of
the previous release, during a rollout) take the catalogue's terms as they are inserted."""

from __future__ import annotations

from gateway.store import migrate as mig
from tests.store.scratch import migrated_before

_OLD_INSERT = """INSERT INTO reward_codes (merchant_id, code, member_id, reward_id, points,
                                            status, issue_op, expires_at)
                 VALUES ('acme', $1, 'm1', $2, 10, 'issued', $3, now() + interval '1 day')"""
_TERMS = "SELECT name, kind, value, sku FROM reward_codes WHERE code = $1"
TEN = ("$10 off", "amount_off", 1000, None)
CUP = ("Free coffee", "free_item", 0, "latte")


async def test_0112_freezes_the_terms_of_codes_issued_before_and_during_the_rollout(
    monkeypatch,
):
    async with migrated_before("0112", monkeypatch) as conn:
        await conn.execute(
            """INSERT INTO rewards (merchant_id, id, name, cost, kind, value, sku) VALUES
               ('acme', 'ten', '$10 off', 10, 'amount_off', 1000, NULL),
               ('acme', 'cup', 'Free coffee', 10, 'free_item', 0, 'latte')"""
        )
        await conn.execute(_OLD_INSERT, "AAAA", "ten", "i1")
        await conn.execute(_OLD_INSERT, "GONE", "deleted-by-hand", "i2")
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
