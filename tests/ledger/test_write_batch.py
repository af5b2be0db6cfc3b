"""WRITE_BATCH carries each table's rows as one JSON document (bytea as hex): every value a
batch writes must come back exactly as the engine had it, whatever its characters."""

from __future__ import annotations

import dataclasses

from gateway.ledger import Commit, Earn, Reserve, decode_outcome
from gateway.ledger.model import fingerprint
from tests.conftest import unique
from tests.ledger.conftest import LedgerWorld, check_invariants

#: Quotes, a backslash, a JSON escape lookalike, non-ASCII and an emoji.
ODD = 'caisse "n°2" \\ \\u0041 ü 🧾'


async def test_a_batch_writes_every_value_exactly(ledger_world: LedgerWorld) -> None:
    w, m = ledger_world, ledger_world.members[2]
    origin = dataclasses.replace(w.origin, channel="pos", store=ODD, terminal=ODD[::-1])
    earn, hold, commit = unique("e") + ODD, unique("h") + ODD, unique("c") + ODD
    # one batch: the three operations queued together
    first = [
        w.ledger.submit(Earn(earn, m, 500, origin)),
        w.ledger.submit(Reserve(hold, m, 120, 60_000, origin)),
    ]
    outs = [await f for f in first]
    assert all(o.ok for o in outs)
    done = await w.ledger.execute(Commit(commit, m, hold, 100, origin))
    assert done.ok

    ops = await w.db.fetch(
        "SELECT op_id, kind, member_id, fingerprint, ok, result FROM operations"
        " WHERE merchant_id = $1 AND op_id = ANY($2::text[]) ORDER BY created_at, op_id",
        w.merchant,
        [earn, hold, commit],
    )
    by_id = {r["op_id"]: r for r in ops}
    assert set(by_id) == {earn, hold, commit}
    assert by_id[earn]["fingerprint"] == fingerprint(Earn(earn, m, 500, origin))
    assert decode_outcome(by_id[earn]["result"]) == outs[0]
    assert decode_outcome(by_id[hold]["result"]) == outs[1]
    assert decode_outcome(by_id[commit]["result"]) == done
    assert all(r["ok"] and r["member_id"] == m for r in ops)

    entries = await w.db.fetch(
        "SELECT op_id, store_id, terminal_id, channel FROM ledger_entries"
        " WHERE member_id = $1 AND op_id = ANY($2::text[])",
        m,
        [earn, hold, commit],
    )
    assert {e["op_id"] for e in entries} == {earn, hold, commit}
    assert all((e["store_id"], e["terminal_id"]) == (ODD, ODD[::-1]) for e in entries)

    h = await w.db.fetchrow(
        "SELECT id, amount, committed, status, expires_at > created_at AS later,"
        " resolved_at >= created_at AS resolved FROM holds WHERE merchant_id = $1 AND id = $2",
        w.merchant,
        hold,
    )
    assert (h["id"], h["amount"], h["committed"], h["status"]) == (hold, 120, 100, "committed")
    assert h["later"] and h["resolved"]

    # a retry replays the stored result, byte for byte the same outcome
    assert await w.ledger.execute(Commit(commit, m, hold, 100, origin)) == done
    await check_invariants(w.db, [m])
