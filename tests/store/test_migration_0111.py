"""Migration 0111 adds what a member owes (returns' uncollected clawbacks) without a long lock
and without a CHECK that a node of the previous release, which never writes ``owed``, would
break during a rollout (found in review: such a CHECK failed the old node's whole batches)."""

from __future__ import annotations

from tests.store.scratch import migrated_before


async def test_0111_takes_no_scan_and_lets_the_previous_release_write(monkeypatch) -> None:
    async with migrated_before(None, monkeypatch) as conn:
        unvalidated = {
            r["conname"]
            for r in await conn.fetch(
                """SELECT conname FROM pg_constraint
                    WHERE conrelid IN ('accounts'::regclass, 'ledger_entries'::regclass)
                      AND NOT convalidated"""
            )
        }
        # added NOT VALID: no scan of either table under its ACCESS EXCLUSIVE lock
        assert {"owed_not_negative", "ledger_entries_kind_check"} <= unvalidated
        await conn.execute(
            "INSERT INTO accounts (member_id, merchant_id, posted, held, owed)"
            " VALUES ('m1', 'acme', 100, 100, 40)"
        )
        # the previous release's batch write: it sets posted, held and version, not owed
        await conn.execute(
            "UPDATE accounts SET posted = 100, held = 0, version = 3 WHERE member_id = 'm1'"
        )
        assert await conn.fetchval("SELECT owed FROM accounts") == 40
