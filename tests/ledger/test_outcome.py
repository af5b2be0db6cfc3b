"""``outcome`` of an operation whose COMMIT is still under way: it waits for that transaction
rather than answer ``operation_not_found`` for an operation that then commits."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.errors import GatewayError
from gateway.ledger import Earn, Ledger, Reads
from gateway.settings import LedgerSettings
from tests.conftest import unique
from tests.ledger.conftest import LedgerWorld

SLOW_COMMIT = """
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.op_id LIKE '{prefix}%' THEN  -- a COMMIT stalled on the disk, deaf to cancels
    BEGIN PERFORM pg_sleep(1.5);
    EXCEPTION WHEN query_canceled THEN PERFORM pg_sleep(1.5); END;
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON operations
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}();
"""


async def test_outcome_after_a_timeout_waits_for_the_commit(ledger_world: LedgerWorld, pg_dsn: str):
    """Found in review: a till told ``timeout`` (its COMMIT outlived the command timeout)
    asked ``outcome`` as documented and was told ``operation_not_found``, which the guide
    called "never took effect"; the operation committed a moment later."""
    w = ledger_world
    prefix = unique("slowcommit")
    name = prefix.replace("-", "_").lower()
    await w.db.execute(SLOW_COMMIT.format(name=name, prefix=prefix))
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    ledger = Ledger(pg_dsn, LedgerSettings(lanes=1, command_timeout=1.0))
    await ledger.start()
    try:
        op = f"{prefix}-1"
        member = w.members[0]
        with pytest.raises(GatewayError):  # timeout: the COMMIT is still under way
            await ledger.execute(Earn(op, member, 100, w.origin))
        found = await Reads(pool, w.redis, w.keys).outcome(w.merchant, op)
        assert found is not None and found.ok  # waited for it, not "not found"
        assert (
            await w.db.fetchval("SELECT posted FROM accounts WHERE member_id = $1", member) == 100
        )
        # an id nobody used is still not found, and the probe left nothing behind
        assert await Reads(pool, w.redis, w.keys).outcome(w.merchant, f"{prefix}-none") is None
        assert not await w.db.fetchval(
            "SELECT count(*) FROM operations WHERE op_id = $1", f"{prefix}-none"
        )
    finally:
        await ledger.close()
        await pool.close()
        await w.db.execute(f"DROP TRIGGER IF EXISTS {name} ON operations")
        await w.db.execute(f"DROP FUNCTION IF EXISTS {name}()")
        await asyncio.sleep(0)
