"""A return's state rides on its ledger operation (``purchases.RETURN_STATE``): applied or
refused, in the transaction of its entry; a row still pending is settled by asking the ledger
what it holds under the row's id (``purchases.returned.settle``)."""

from __future__ import annotations

import asyncpg
import orjson

from gateway.programme import create_merchant
from gateway.purchases import RETURN_STATE
from gateway.purchases.returned import settle
from tests.conftest import unique
from tests.loyalty_support import enrol, ok, phone


async def state(pg_dsn: str, merchant: str, op: str) -> str | None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return await conn.fetchval(
            "SELECT state FROM sale_returns WHERE merchant_id = $1 AND op_id = $2", merchant, op
        )
    finally:
        await conn.close()


async def test_an_applied_return_is_marked_applied_with_its_entry(clients, merchant, pg_dsn):
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale, back = unique("s"), unique("r")
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 1_000})
    await ok(till, {"type": "return", "op": back, "member": m, "sale": sale})
    assert await state(pg_dsn, merchant, back) == "applied"


async def insert_return(conn: asyncpg.Connection, merchant: str, op: str, member: str) -> None:
    await conn.execute(
        """INSERT INTO sale_returns (merchant_id, op_id, sale_op, member_id, lines, value,
                                     clawback, restored, fingerprint)
           VALUES ($1, $2, 'a-sale', $3, '{}', 100, 1, 0, '\\x00')""",
        merchant,
        op,
        member,
    )


async def test_the_state_statement_leaves_another_merchants_row_sharing_an_op_id(pg_dsn):
    """The statement finds rows by merchant = ANY and op = ANY: a row of merchant A under the
    op id of merchant B's return in the same batch matches both and must be left alone."""
    from gateway.members import create_members

    a, b = unique("mer"), unique("mer")
    ma, mb = unique("mem"), unique("mem")
    mine, shared = unique("r"), unique("r")
    conn = await asyncpg.connect(pg_dsn)
    try:
        for merchant, member in ((a, ma), (b, mb)):
            await create_merchant(conn, merchant)
            await create_members(conn, merchant, [member])
        await insert_return(conn, a, mine, ma)
        await insert_return(conn, a, shared, ma)  # A's own return that shares B's op id
        await insert_return(conn, b, shared, mb)
        rows = [{"m": a, "o": mine, "state": "applied"}, {"m": b, "o": shared, "state": "refused"}]
        sql = RETURN_STATE.sql.format(rows="$1", at="now()")
        updated = await conn.fetch(sql, orjson.dumps(rows).decode())
        assert len(updated) == 2
        got = {
            (r["merchant_id"], r["op_id"]): r["state"]
            for r in await conn.fetch(
                "SELECT merchant_id, op_id, state FROM sale_returns WHERE merchant_id = ANY($1)",
                [a, b],
            )
        }
        assert got == {(a, mine): "applied", (b, shared): "refused", (a, shared): "pending"}
    finally:
        await conn.close()


async def test_a_pending_row_is_settled_by_what_the_ledger_holds_under_its_id(
    clients, merchant, pg_dsn
):
    """A row left pending (its node stopped before the ledger answered) takes the state of
    the operation the ledger holds under its id; with nothing there it stays pending."""
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale, other = unique("s"), unique("s")
    await ok(till, {"type": "sale", "op": sale, "member": m, "total": 1_000})
    await ok(till, {"type": "sale", "op": other, "member": m, "total": 100})  # takes an id
    conn = await asyncpg.connect(pg_dsn)
    try:
        nothing = unique("r")
        await insert_return(conn, merchant, other, m)
        await insert_return(conn, merchant, nothing, m)
        states = await settle(conn, merchant, [other, nothing])
        assert states == {other: "refused"}
        assert await state(pg_dsn, merchant, other) == "refused"
        assert await state(pg_dsn, merchant, nothing) == "pending"
    finally:
        await conn.close()
