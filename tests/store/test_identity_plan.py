"""An app's lookup (``directory.identifies``) reaches accounts by primary key only: a first
version walked down from the app's member through ``accounts.merged_into``, which has no
index, and scanned every account whenever the identity was someone else's (30 ms at 500,000
accounts against 0.2 ms for an unknown one: the timing told who is enrolled; found in review).
It reads the identity's holder, then the ledger's chain of merges up from the holder
(``accounts.merge_chain``): neither may scan."""

from __future__ import annotations

from gateway.ledger import accounts
from gateway.members import directory
from tests.store.scratch import migrated_before


async def test_an_apps_lookup_never_scans_the_accounts(monkeypatch) -> None:
    async with migrated_before(None, monkeypatch) as conn:
        await conn.execute(
            """INSERT INTO members (id, merchant_id)
               SELECT 'x' || g, 'acme' FROM generate_series(1, 20000) g;
               INSERT INTO accounts (member_id, merchant_id)
               SELECT 'x' || g, 'acme' FROM generate_series(1, 20000) g;
               INSERT INTO accounts (member_id, merchant_id) VALUES ('m1', 'acme');
               INSERT INTO member_identities (merchant_id, kind, value, member_id)
               SELECT 'acme', 'phone', '+1' || g, 'x' || g FROM generate_series(1, 20000) g;
               ANALYZE accounts; ANALYZE member_identities;"""
        )
        args = ("acme", "phone", "+17", "m1")  # someone else's phone
        plans = [
            await conn.fetch("EXPLAIN " + directory._HOLDER, *args[:3]),
            await conn.fetch("EXPLAIN " + accounts._MERGE_CHAIN, "x7"),
        ]
        for plan in ("\n".join(r[0] for r in rows) for rows in plans):
            assert "Seq Scan on accounts" not in plan, plan
            assert "Seq Scan on member_identities" not in plan, plan
        assert not await directory.identifies(conn, *args)
        assert await directory.identifies(conn, "acme", "phone", "+17", "x7")
