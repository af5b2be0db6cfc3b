"""Predictions kept off the sale path: a sale with lines queues its member in the sale's own
transaction (the sales trigger), the worker recomputes from the whole history (any channel),
several workers at once write each member once and the later history wins, the population
figure moves the predictions leaning on it, and a merge moves them to the survivor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.reorder import Predictor, predict
from tests.loyalty_support import enrol, phone
from tests.reorder.support import buy, fetch, product

T0 = datetime(2027, 1, 4, 9, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


async def predictions(pg_dsn: str, merchant: str, member: str) -> dict[str, Any]:
    rows = await fetch(
        pg_dsn,
        """SELECT sku, units, purchases, intervals, per_unit_days, predicted_at, method
             FROM reorder_predictions WHERE merchant_id = $1 AND member_id = $2""",
        merchant,
        member,
    )
    return {r["sku"]: dict(r) for r in rows}


async def queued(pg_dsn: str, merchant: str) -> list[str]:
    rows = await fetch(
        pg_dsn, "SELECT member_id FROM reorder_events WHERE merchant_id = $1", merchant
    )
    return [r["member_id"] for r in rows]


async def test_a_sale_queues_its_member_and_the_worker_predicts_from_every_channel(
    rn, clients, merchant, pg_dsn
):
    await product(pg_dsn, merchant, "coffee", 21)
    await product(pg_dsn, merchant, "mug", None)  # durable: never predicted
    till = await clients.pos(merchant)
    web = await clients.pos(merchant, channel="web")
    m = str((await enrol(till, phone=phone())).member)
    await buy(till, pg_dsn, f"{merchant}-1", m, day(0), coffee=1, mug=1)
    assert await queued(pg_dsn, merchant) == [m]  # written with the sale, nothing computed yet
    assert await predictions(pg_dsn, merchant, m) == {}
    await buy(web, pg_dsn, f"{merchant}-2", m, day(30), coffee=2)
    await buy(till, pg_dsn, f"{merchant}-3", m, day(90), coffee=1)
    await buy(web, pg_dsn, f"{merchant}-4", m, day(118), coffee=1)
    done = await rn.node.reorder.predictor.run()
    assert done.members >= 4  # one event per sale (and other tests' left in the database)
    assert await queued(pg_dsn, merchant) == []
    got = await predictions(pg_dsn, merchant, m)
    assert set(got) == {"coffee"}
    c = got["coffee"]
    # gaps per unit 30, 30, 28: median 30 days, last purchase one bag -> day 148
    assert (c["method"], c["intervals"], c["per_unit_days"]) == ("member", 3, 30.0)
    assert c["predicted_at"] == day(148)
    # the next purchase moves it: 2 bags on day 150 -> gaps 30, 30, 28, 32, median 30, day 210
    await buy(till, pg_dsn, f"{merchant}-5", m, day(150), coffee=2)
    await rn.node.reorder.predictor.run()
    assert (await predictions(pg_dsn, merchant, m))["coffee"]["predicted_at"] == day(210)


async def test_a_sale_without_lines_or_of_durables_predicts_nothing(rn, clients, merchant, pg_dsn):
    await product(pg_dsn, merchant, "kettle", None)
    till = await clients.pos(merchant)
    m = str((await enrol(till, phone=phone())).member)
    await buy(till, pg_dsn, f"{merchant}-a", m, day(0))
    assert await queued(pg_dsn, merchant) == []  # no lines: not even queued
    await buy(till, pg_dsn, f"{merchant}-b", m, day(1), kettle=1, unknown_sku=1)
    await rn.node.reorder.predictor.run()
    assert await predictions(pg_dsn, merchant, m) == {}


async def test_catalogue_then_population_figure(rn, clients, merchant, pg_dsn):
    """Three buyers with one gap each of 10, 20 and 40 days per unit: the 75th percentile
    (linear, as PostgreSQL's percentile_cont) is 30. A member with one purchase of 2 units
    first reads the catalogue's 50 days a unit, then, once the figure is computed with
    enough buyers (3 here), 30."""
    await product(pg_dsn, merchant, "food", 50)
    till = await clients.pos(merchant)
    for i, gap in enumerate((10, 20, 40)):
        b = str((await enrol(till, phone=phone())).member)
        await buy(till, pg_dsn, f"{merchant}-p{i}a", b, day(0), food=1)
        await buy(till, pg_dsn, f"{merchant}-p{i}b", b, day(gap), food=1)
    m = str((await enrol(till, phone=phone())).member)
    await buy(till, pg_dsn, f"{merchant}-m", m, day(5), food=2)
    worker = Predictor(rn.node.pool, min_buyers=3)
    await worker.run()
    first = (await predictions(pg_dsn, merchant, m))["food"]
    assert (first["method"], first["predicted_at"]) == ("catalogue", day(105))
    products, moved = await worker.refresh_population(merchant)
    assert products == 1
    assert moved == 4  # the member and the three buyers (one gap each: not their own yet)
    pop = await fetch(
        pg_dsn,
        "SELECT buyers, per_unit_days FROM reorder_population WHERE merchant_id = $1",
        merchant,
    )
    assert [(r["buyers"], r["per_unit_days"]) for r in pop] == [(3, 30.0)]
    after = (await predictions(pg_dsn, merchant, m))["food"]
    assert (after["method"], after["predicted_at"]) == ("population", day(65))
    # the SQL and ``predict`` agree
    p = predict("food", [(day(5), 2)], 50, worker_population(3, 30.0), min_buyers=3)
    assert (p.method, p.predicted_at) == (after["method"], after["predicted_at"])
    assert await worker.refresh_population(merchant) == (1, 0)  # nothing moves twice


def worker_population(buyers: int, days: float) -> Any:
    from gateway.reorder import Population

    return Population(buyers, days)


async def test_two_workers_at_once_consume_each_event_once(rn, clients, merchant, pg_dsn):
    await product(pg_dsn, merchant, "tea", 14)
    till = await clients.pos(merchant)
    members = [str((await enrol(till, phone=phone())).member) for _ in range(12)]
    for i, m in enumerate(members):
        for k in range(4):
            await buy(till, pg_dsn, f"{merchant}-{i}-{k}", m, day(7 * k), tea=1)
    a, b = Predictor(rn.node.pool), Predictor(rn.node.pool)
    claims = await asyncio.gather(*(w.drain_once(batch=5) for w in (a, b, a, b, a, b)))
    claims += [await a.drain_once(batch=100)]
    assert sum(n for n, _ in claims) == 48
    assert await queued(pg_dsn, merchant) == []
    for m in members:
        tea = (await predictions(pg_dsn, merchant, m))["tea"]
        assert (tea["method"], tea["predicted_at"]) == ("member", day(28))


async def test_a_merge_moves_the_predictions_to_the_survivor(rn, clients, http, merchant, pg_dsn):
    from tests.loyalty_support import admin

    await product(pg_dsn, merchant, "soap", 30)
    till = await clients.pos(merchant)
    keep = str((await enrol(till, phone=phone())).member)
    dup = str((await enrol(till, phone=phone())).member)
    await buy(till, pg_dsn, f"{merchant}-k1", keep, day(0), soap=1)
    await buy(till, pg_dsn, f"{merchant}-d1", dup, day(10), soap=1)
    await rn.node.reorder.predictor.run()
    assert set(await predictions(pg_dsn, merchant, dup)) == {"soap"}
    status, reply = await admin(
        http,
        "POST",
        f"{rn.url}/admin/v1/merchants/{merchant}/members/{keep}/merge",
        json={"source": dup, "op": f"merge-{dup}"},
    )
    assert status == 200, reply
    await rn.node.reorder.predictor.run()
    assert await predictions(pg_dsn, merchant, dup) == {}
    soap = (await predictions(pg_dsn, merchant, keep))["soap"]
    assert (soap["purchases"], soap["intervals"], soap["predicted_at"]) == (2, 1, day(40))
    status, export = await admin(
        http, "GET", f"{rn.url}/admin/v1/merchants/{merchant}/members/{keep}/export"
    )
    assert status == 200
    assert [(p["sku"], p["units"], p["method"]) for p in export["reorder_predictions"]] == [
        ("soap", 1, "catalogue")
    ]
