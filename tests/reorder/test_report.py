"""The uplift report: the interval math on hand-computed and published examples (Wilson;
Newcombe's hybrid score interval, his 1998 paper's example; the log risk ratio; the pooled
z-test), and a loop's report through the admin API as JSON, CSV and an SVG chart, counted
from its reminders, purchases, rewards, messages and clicks; another merchant's 404."""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from gateway.reorder import control_point, newcombe, relative, wilson, z_test
from tests.loyalty_support import admin, new_merchant
from tests.reorder.support import product
from tests.reorder.test_outbox import put_loop, shopper
from tests.reorder.test_reorder_rewards import sale

NOW = datetime.now(UTC).replace(microsecond=0)


def test_wilson_intervals() -> None:
    # 8 of 20: p = 0.4; centre (0.4 + 1.9208/20) / (1 + 3.8415/20) = 0.41608, half 0.19732
    low, high = wilson(8, 20)
    assert (round(low, 4), round(high, 4)) == (0.2188, 0.6134)
    assert wilson(0, 10)[0] == 0.0 and round(wilson(0, 10)[1], 4) == 0.2775
    assert wilson(0, 0) == (0.0, 1.0)


def test_newcombes_example_and_edges() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80,
    # difference 0.2000, method 10: 0.0524 to 0.3339
    d, low, high = newcombe(56, 70, 48, 80)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    # example (h): 0/10 vs 0/10: 0, -0.2775 to 0.2775
    d, low, high = newcombe(0, 10, 0, 10)
    assert (d, round(low, 4), round(high, 4)) == (0.0, -0.2775, 0.2775)


def test_relative_uplift_and_the_z_test() -> None:
    # 30/100 vs 20/100: RR 1.5, SE(ln RR) = sqrt(1/30 - 1/100 + 1/20 - 1/100) = 0.25166
    rel, low, high = relative(30, 100, 20, 100)
    assert rel == pytest.approx(0.5)
    assert low == pytest.approx(1.5 * math.exp(-1.959964 * 0.251661) - 1, abs=1e-5)
    assert high == pytest.approx(1.5 * math.exp(1.959964 * 0.251661) - 1, abs=1e-5)
    assert (round(low, 3), round(high, 3)) == (-0.084, 1.456)
    assert relative(3, 10, 0, 10) == (None, None, None)  # no control repurchase
    assert relative(0, 10, 2, 10) == (-1.0, None, None)
    z, p = z_test(30, 100, 20, 100)
    assert (round(z, 3), round(p, 4)) == (1.633, 0.1025)  # pooled p 0.25, SE 0.061237
    assert z_test(0, 5, 0, 5) == (None, None)


async def test_a_loops_report_as_json_csv_and_svg(http, rn, clients, merchant, pg_dsn, smtp):
    await product(pg_dsn, merchant, "beans", 30)
    till = await clients.pos(merchant)
    people = [(await shopper(till, pg_dsn, merchant))[0] for _ in range(12)]
    await put_loop(
        http,
        rn,
        merchant,
        "half",
        control_share=0.5,
        incentive={"kind": "points", "points": 100, "attribution_days": 10},
    )
    await rn.node.reorder.run(NOW)
    control = [p for p in people if control_point(merchant, "half", p) < 0.5]
    treated = [p for p in people if p not in control]
    assert control and treated
    # half of each group (rounded up) reorders, 2 units each
    buyers = treated[: (len(treated) + 1) // 2] + control[: (len(control) + 1) // 2]
    for b in buyers:
        await sale(till, f"{merchant}-r-{b}", b, qty=2)
    await rn.node.reorder.run(NOW)
    base = f"{rn.url}/admin/v1/merchants/{merchant}/reorder-loops/half/report"
    later = NOW + timedelta(days=30)  # every window has ended
    status, rep = await admin(http, "GET", base)
    assert status == 200, rep
    # now: only the repurchased are settled, and the treated messages were all sent
    assert rep["messages"]["sent"] == len(treated)
    r = await rn.node.reorder.report(merchant, "half", later)
    assert r is not None
    xt, xc = (len(treated) + 1) // 2, (len(control) + 1) // 2
    assert (r.treated.reminders, r.treated.repurchased) == (len(treated), xt)
    assert (r.control.reminders, r.control.repurchased) == (len(control), xc)
    assert r.treated.revenue == 2000 * xt and r.control.revenue == 2000 * xc
    assert r.treated.points == 100 * xt and r.control.points == 0
    d, low, high = newcombe(xt, len(treated), xc, len(control))
    assert (r.uplift.absolute, r.uplift.absolute_low, r.uplift.absolute_high) == (d, low, high)
    assert r.open == 0
    # the CSV and the chart
    async with http.get(base + ".csv", headers={"Authorization": "Bearer dev-admin-token"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [x["group"] for x in rows] == ["treated", "control"]
    assert int(rows[0]["repurchased"]) == xt and int(rows[0]["sent"]) == len(treated)
    async with http.get(base + ".svg", headers={"Authorization": "Bearer dev-admin-token"}) as resp:
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        root = ET.fromstring(await resp.text())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "treated" in texts and "control" in texts and "Uplift" in texts
    # another merchant's loop, an unknown loop
    other = await new_merchant(pg_dsn)
    for suffix in ("", ".csv", ".svg"):
        status, reply = await admin(
            http, "GET", f"{rn.url}/admin/v1/merchants/{other}/reorder-loops/half/report{suffix}"
        )
        assert (status, reply["error"]) == (404, "not_found")
