"""The property: whatever the history, the membership the live path keeps (each sale, return,
redemption, tier change and profile edit re-evaluating its member) is the membership a full
recompute finds. Seeded random histories (the seed of a failing one is in the assertion):
random segment trees over every kind of condition, a year of older purchases written as the
aggregates would hold them, then sales, returns, redemptions and profile edits through the
node, at one instant (``now`` held fixed, so relative windows do not move between the two:
time passing is the nightly pass's), and the RFM quintiles held fixed between the passes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.aggregates import day_of
from tests.conftest import unique
from tests.loyalty_support import add_reward, admin, enrol, new_merchant, ok, phone, setup_db

HISTORIES = 24
CATEGORIES = ["kitchen", "garden", "toys"]
BRANDS = ["acme", "edge", "zen"]
SKUS = {f"sku{i}": (CATEGORIES[i % 3], BRANDS[i % 3] if i % 4 else None) for i in range(6)}


def leaf(r: random.Random) -> dict[str, Any]:
    w = r.choice([None, 1, 30, 90, 180, 365, 400])
    kind = r.choice(
        [
            "spend",
            "visits",
            "recency",
            "rfm",
            "bought",
            "channels",
            "tier",
            "points",
            "birthday_month",
            "consent",
            "attribute",
        ]
    )
    win = {} if w is None else {"within_days": w}
    if kind == "spend":
        return {"type": "spend", "min": r.choice([1, 1_000, 5_000, 20_000]), **win}
    if kind == "visits":
        return {"type": "visits", "min": r.randint(1, 4), **win}
    if kind == "recency":
        return r.choice(
            [
                {"type": "recency", "max_days": r.choice([0, 30, 200])},
                {"type": "recency", "min_days": r.choice([1, 60, 300])},
                {"type": "recency", "never": True},
            ]
        )
    if kind == "rfm":
        lo = r.randint(1, 5)
        return {"type": "rfm", "score": r.choice(["recency", "frequency", "monetary"]), "min": lo}
    if kind == "bought":
        of = r.choice(["sku", "category", "brand"])
        key = r.choice(list(SKUS) if of == "sku" else CATEGORIES if of == "category" else BRANDS)
        return {
            "type": "bought",
            "of": of,
            "key": key,
            "min": r.randint(1, 4),
            "measure": r.choice(["units", "visits", "spend"]),
            **win,
        }
    if kind == "channels":
        return {
            "type": "channels",
            "online": r.choice([True, False]),
            "in_store": r.choice([True, False, None]),
            **win,
        }
    if kind == "tier":
        return {"type": "tier", "in": r.sample(["", "silver", "gold"], r.randint(1, 2))}
    if kind == "points":
        return {"type": "points", "min": r.choice([0, 20, 100])}
    if kind == "birthday_month":
        return {"type": "birthday_month"}
    if kind == "consent":
        return {"type": "consent", "channel": r.choice(["email", "sms"])}
    return {"type": "attribute", "name": "preferred_store", "in": ["s1", "s2"]}


def tree(r: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = r.random()
    if depth >= 2 or roll < 0.4:
        return leaf(r)
    if roll < 0.5:
        return {"type": "not", "condition": tree(r, depth + 1)}
    kind = "all" if roll < 0.75 else "any"
    return {"type": kind, "conditions": [tree(r, depth + 1) for _ in range(r.randint(2, 3))]}


async def older_history(pg_dsn: str, merchant: str, member: str, r: random.Random, today: int):
    """Purchases before the node's, as the aggregates keep them (day rows)."""
    rows = []
    for _ in range(r.randint(0, 5)):
        day = today - r.randint(1, 420)
        sku = r.choice(list(SKUS))
        cat, brand = SKUS[sku]
        units, spend, ch = r.randint(1, 3), r.randint(1, 80) * 100, r.choice(["pos", "web"])
        rows += [
            ("t", "", day, units, spend),
            ("h", ch, day, units, spend),
            ("s", sku, day, units, spend),
            ("c", cat, day, units, spend),
        ]
        if brand:
            rows.append(("b", brand, day, units, spend))
    for dim, key, day, units, spend in rows:
        await setup_db(
            pg_dsn,
            """INSERT INTO member_purchase_days AS d
                   (member_id, dim, key, day, merchant_id, units, spend, visits)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
               ON CONFLICT (member_id, dim, key, day) DO UPDATE
                  SET units = d.units + EXCLUDED.units, spend = d.spend + EXCLUDED.spend,
                      visits = d.visits + 1""",
            member,
            dim,
            key,
            day,
            merchant,
            units,
            spend,
        )


async def memberships(pg_dsn: str, merchant: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT segment_id, member_id FROM segment_members WHERE merchant_id = $1", merchant
        )
    finally:
        await conn.close()
    return {(x["segment_id"], x["member_id"]) for x in rows}


async def test_live_membership_equals_a_full_recompute(clients, http, rn, pg_dsn, monkeypatch):
    segments = rn.node.segments
    monkeypatch.setattr(segments, "_ttl", 0.0)
    base = datetime.now(UTC)
    moved = 0
    for seed in range(HISTORIES):
        r = random.Random(seed)
        now = base + timedelta(days=r.choice([0, 0, 3, 45, 200]))
        monkeypatch.setattr(segments, "_clock", lambda now=now: now)
        merchant = await new_merchant(pg_dsn)
        await setup_db(
            pg_dsn,
            """INSERT INTO tiers (merchant_id, id, threshold) VALUES ($1, 'silver', 60),
                   ($1, 'gold', 250)""",
            merchant,
        )
        await add_reward(pg_dsn, merchant, "r10", 10, 100)
        till = await clients.pos(merchant)
        web = await clients.pos(merchant, terminal="w1", channel="web")
        members = [(await enrol(till, phone=phone())).member for _ in range(3)]
        for m in members:
            await older_history(pg_dsn, merchant, m, r, day_of(now))
        for i in range(5):
            status, body = await admin(
                http,
                "PUT",
                f"{rn.url}/admin/v1/merchants/{merchant}/segments/g{i}",
                json={"condition": tree(r)},
            )
            assert status == 200, (seed, body)
        await segments.idle()
        await segments.recompute(merchant)  # the quintiles of the older history
        sales: list[tuple[str, str, list[dict[str, Any]]]] = []
        apps = {m: await clients.app(merchant, m) for m in members}
        for _ in range(r.randint(4, 12)):
            m = r.choice(members)
            roll = r.random()
            if roll < 0.45 or not sales:
                lines = []
                for sku in r.sample(list(SKUS), r.randint(0, 3)):
                    cat, brand = SKUS[sku]
                    line = {
                        "sku": sku,
                        "qty": r.randint(1, 3),
                        "price": r.randint(1, 50) * 100,
                        "category": cat,
                    }
                    if brand:
                        line["brand"] = brand
                    lines.append(line)
                total = sum(x["qty"] * x["price"] for x in lines) or r.randint(1, 50) * 100
                op = unique("s")
                await ok(
                    r.choice([till, web]),
                    {"type": "sale", "op": op, "member": m, "total": total, "lines": lines},
                )
                sales.append((op, m, lines))
            elif roll < 0.65:
                op, owner, lines = r.choice(sales)
                frame: dict[str, Any] = {
                    "type": "return",
                    "op": unique("r"),
                    "member": owner,
                    "sale": op,
                }
                if lines and r.random() < 0.5:
                    ln = r.choice(lines)
                    frame["lines"] = [{"sku": ln["sku"], "qty": 1}]
                await clients_reply(till, frame)  # may be refused (nothing left): fine
            elif roll < 0.75:
                await clients_reply(
                    apps[m],
                    {"type": "redeem_reward", "op": unique("rw"), "member": m, "reward": "r10"},
                )
            else:
                edit: dict[str, Any] = r.choice(
                    [
                        {"consent": {"email": r.choice([True, False])}},
                        {"consent": {"sms": r.choice([True, False])}},
                        {
                            "birthday": {
                                "month": r.choice([now.month, (now.month % 12) + 1]),
                                "day": 1,
                            }
                        },
                        {"preferred_store": r.choice(["s1", "s2", "s3"])},
                    ]
                )
                await ok(apps[m], {"type": "update_profile", "member": m, **edit})
        await segments.idle()
        live = await memberships(pg_dsn, merchant)
        moved += len(live)
        done = await segments.recompute(merchant, rfm=False)
        full = await memberships(pg_dsn, merchant)
        assert (done.entered, done.left, full) == (0, 0, live), f"seed {seed}"
        for c in (till, web, *apps.values()):
            await c.close()
    assert moved > 0  # the histories put members in segments at all


async def clients_reply(client: Any, frame: dict[str, Any]) -> Any:
    frame = {"id": unique("q"), **frame}
    return await client.request(frame)
