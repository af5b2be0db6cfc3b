"""Multi-tenant: every loyalty websocket command from another merchant's register sees nothing
of this merchant's members, sales, rewards or codes."""

from __future__ import annotations

import asyncpg

from gateway.programme import create_merchant
from tests.conftest import unique
from tests.loyalty_support import enrol, err, ok, phone, setup_db


async def test_every_loyalty_command_is_merchant_scoped(clients, merchant, pg_dsn):
    await setup_db(
        pg_dsn,
        "INSERT INTO rewards (merchant_id, id, cost, kind, value) VALUES ($1, 'w', 1, 'amount_off', 1)",
        merchant,
    )
    other = unique("mer")
    conn = await asyncpg.connect(pg_dsn)
    await create_merchant(conn, other)
    await conn.close()
    mine, theirs = await clients.pos(merchant), await clients.pos(other)
    number = phone()
    m = (await enrol(mine, phone=number, email="iso@example.com", card="ISO-9")).member
    await ok(mine, {"type": "sale", "op": f"s-{m}", "member": m, "total": 5_000})
    code = (
        await ok(mine, {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "w"})
    ).code
    token = (await ok(await clients.app(merchant, m), {"type": "pass", "member": m})).token
    probes = [
        ({"type": "lookup", "phone": number}, "member_not_found"),
        ({"type": "lookup", "email": "iso@example.com"}, "member_not_found"),
        ({"type": "lookup", "card": "ISO-9"}, "member_not_found"),
        ({"type": "lookup", "qr": token}, "member_not_found"),
        ({"type": "pass", "member": m}, "member_not_found"),
        ({"type": "history", "member": m}, "member_not_found"),
        ({"type": "sale", "op": unique("s"), "member": m, "total": 100}, "member_not_found"),
        (
            {"type": "sale", "op": unique("s"), "member": m, "total": 100, "offers": ["o"]},
            "member_not_found",
        ),
        (
            {"type": "redeem_reward", "op": unique("r"), "member": m, "reward": "w"},
            "member_not_found",
        ),
        ({"type": "use_code", "op": unique("u"), "code": code}, "code_not_found"),
        ({"type": "void_code", "op": unique("v"), "code": code}, "code_not_found"),
        ({"type": "return", "op": unique("t"), "member": m, "sale": f"s-{m}"}, "member_not_found"),
        ({"type": "cashier_view", "member": m}, "member_not_found"),
        ({"type": "wallet", "member": m}, "member_not_found"),
        ({"type": "codes", "member": m}, "member_not_found"),
        ({"type": "update_profile", "member": m, "name": "Mallory"}, "member_not_found"),
        ({"type": "verify_contact", "member": m, "email": "x@example.com"}, "member_not_found"),
        (
            {"type": "confirm_contact", "member": m, "email": "x@example.com", "code": "123456"},
            "member_not_found",
        ),
    ]
    for frame, code_expected in probes:
        assert (await err(theirs, frame)).code == code_expected, frame
    # enrolling the same identities at the other merchant makes a different member
    twin = await enrol(theirs, phone=number, email="iso@example.com")
    assert twin.created and twin.member != m
    assert (await ok(mine, {"type": "balance", "member": m})).posted == 49
