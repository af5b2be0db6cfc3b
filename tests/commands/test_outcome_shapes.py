"""``outcome`` answers what the command's own reply carried, for every kind of command that
moves points: a till that settles an unknown outcome reads the shape it would have read."""

from __future__ import annotations

from protocol.loyalty import ReturnReceipt, RewardCode
from protocol.messages import HoldState, SaleReceipt
from tests.conftest import unique
from tests.loyalty_support import add_reward, enrol, ok, phone


async def settled(client, op: str):  # type: ignore[no-untyped-def]
    found = await ok(client, {"type": "outcome", "op": op})
    assert found.ok and found.op == op
    return found.data


async def test_outcome_answers_each_commands_own_reply(clients, merchant, pg_dsn):
    await add_reward(pg_dsn, merchant, "ten-off", 100, 1000)
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    sale, hold, commit, back, redeem, void = (unique(k) for k in "shcrdv")
    replies = {
        sale: await ok(till, {"type": "sale", "op": sale, "member": m, "total": 50_000}),
        hold: await ok(till, {"type": "reserve", "op": hold, "member": m, "points": 30}),
    }
    replies[commit] = await ok(
        till, {"type": "commit", "op": commit, "member": m, "hold": hold, "points": 20}
    )
    replies[back] = await ok(
        till, {"type": "return", "op": back, "member": m, "sale": sale, "amount": 10_000}
    )
    replies[redeem] = await ok(
        till, {"type": "redeem_reward", "op": redeem, "member": m, "reward": "ten-off"}
    )
    replies[void] = await ok(till, {"type": "void_code", "op": void, "code": replies[redeem].code})
    kinds = {
        sale: SaleReceipt,
        hold: HoldState,
        commit: HoldState,
        back: ReturnReceipt,
        redeem: RewardCode,
        void: RewardCode,
    }
    for op, kind in kinds.items():
        data = await settled(till, op)
        assert isinstance(data, kind), (op, data)
        if op in (sale, hold, commit, back, void):  # the reply as it was
            assert data == replies[op], (op, data, replies[op])
    # a redemption's code, as it is now (voided since), with the balance its reply told
    now = await settled(till, redeem)
    assert (now.code, now.status) == (replies[redeem].code, "voided")
    assert now.balance == replies[redeem].balance


async def test_an_apps_outcome_of_its_redemption_is_its_code(clients, merchant, pg_dsn):
    await add_reward(pg_dsn, merchant, "one", 10, 100)
    till = await clients.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    await ok(till, {"type": "sale", "op": unique("s"), "member": m, "total": 5_000})
    app = await clients.app(merchant, m)
    op = unique("a")
    code = await ok(app, {"type": "redeem_reward", "op": op, "member": m, "reward": "one"})
    data = await settled(app, op)
    assert isinstance(data, RewardCode) and data.code == code.code
