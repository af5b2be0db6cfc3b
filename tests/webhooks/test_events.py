"""The domain's events, each written in the transaction of its change: member.enrolled,
tier.changed, reward.redeemed, code.used, member.merged, member.erased; an endpoint gets
only the types it subscribed to, each event once."""

from __future__ import annotations

from collections import Counter

from tests.loyalty_support import add_reward, admin, enrol, ok, phone, setup_db
from tests.webhooks.conftest import Receiver, hook

ALL = [
    "member.enrolled",
    "tier.changed",
    "reward.redeemed",
    "code.used",
    "member.merged",
    "member.erased",
]


async def test_every_domain_event_once_and_only_the_types_subscribed(
    http, wn, tills, merchant, pg_dsn, receiver: Receiver
):
    await hook(http, wn, merchant, receiver.at("/all"), events=ALL)
    await hook(http, wn, merchant, receiver.at("/codes"), events=["code.used"])
    await setup_db(
        pg_dsn,
        """INSERT INTO tiers (merchant_id, id, name, threshold, multiplier)
           VALUES ($1, 'silver', 'Silver', 100, 1)""",
        merchant,
    )
    await add_reward(pg_dsn, merchant, "r80", 80, 500)
    till = await tills.pos(merchant)
    m = (await enrol(till, phone=phone())).member
    again = await enrol(till, phone=phone())
    await ok(till, {"type": "sale", "op": "s1", "member": m, "total": 20_000})  # 200: silver
    code = await ok(till, {"type": "redeem_reward", "op": "rw1", "member": m, "reward": "r80"})
    await ok(till, {"type": "use_code", "op": "u1", "code": code.code})
    await ok(till, {"type": "use_code", "op": "u1", "code": code.code})  # a retry: no event
    base = f"{wn.url}/admin/v1/merchants/{merchant}/members"
    status, merged = await admin(
        http, "POST", f"{base}/{m}/merge", json={"source": again.member, "op": "mg1"}
    )
    assert status == 200, merged
    status, _ = await admin(
        http, "POST", f"{base}/{m}/merge", json={"source": again.member, "op": "mg1"}
    )
    assert status == 200  # the same merge again: no second event
    status, erased = await admin(http, "DELETE", f"{base}/{m}")
    assert status == 200, erased
    got = await receiver.wait_for(7, "/all")
    await receiver.wait_for(1, "/codes")
    by_type = Counter(r.event["type"] for r in receiver.ok("/all"))
    assert by_type == {
        "member.enrolled": 2,
        "tier.changed": 1,
        "reward.redeemed": 1,
        "code.used": 1,
        "member.merged": 1,
        "member.erased": 1,
    }, by_type
    data = {r.event["type"]: r.event["data"] for r in got}
    assert data["tier.changed"] == {
        "member": m,
        "tier": "silver",
        "previous": "",
        "direction": "up",
    }
    assert data["reward.redeemed"]["code"] == code.code and data["reward.redeemed"]["points"] == 80
    assert data["code.used"]["code"] == code.code and data["code.used"]["op"] == "u1"
    assert data["member.merged"] == {"member": m, "source": again.member, "op": "mg1"}
    assert data["member.erased"]["member"] == m
    assert [r.event["type"] for r in receiver.ok("/codes")] == ["code.used"]
    assert all(r.event["merchant"] == merchant for r in receiver.got)
