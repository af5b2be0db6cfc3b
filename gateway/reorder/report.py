"""The uplift report of a loop: its reminders in the treated group (messages) against the
control group (none), tracked the same way.

- **Unit**: a reminder (a member, a product, a cycle); members are counted too. A reminder
  counts once its window has ended (its due date + the attribution window, the incentive's
  or 14 days) or it was repurchased: "settled"; the others are "open".
- **Repurchased**: the member bought the product again (any channel) by the end of the
  window (``reordered_at``), the same rule in both groups.
- **Absolute uplift** = treated rate - control rate, with the 95 % interval of Newcombe's
  hybrid score method (his method 10: from each rate's Wilson score interval), which keeps to
  [-1, 1] and behaves at small counts and rates near 0 or 1, where the Wald interval of the
  two-proportion z-test does not. The z-test's statistic and two-sided p-value (pooled) are
  given beside it.
- **Relative uplift** = treated rate / control rate - 1, with the 95 % interval of the log
  risk ratio (Katz), none when a group has no repurchase.
- **Revenue**: the product's purchases in each repurchased reminder's window (from its
  creation to its end), per member of the group; **points cost**: the rewards granted, per
  treated member.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.purchases import bought
from gateway.reorder.loops import Loop
from gateway.store.db import translate_errors

Z95 = 1.959963984540054
#: The window when the loop has no incentive.
DEFAULT_WINDOW_DAYS = 14


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of x successes in n."""
    if n == 0:
        return 0.0, 1.0
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """The difference p1 - p2 and its hybrid score interval (Newcombe 1998, method 10)."""
    p1, p2 = (x1 / n1 if n1 else 0.0), (x2 / n2 if n2 else 0.0)
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def relative(
    x1: int, n1: int, x2: int, n2: int, z: float = Z95
) -> tuple[float | None, float | None, float | None]:
    """p1 / p2 - 1 and the 95 % interval of the log risk ratio (Katz); None where it is not
    defined (no control repurchase; no interval without a treated one either)."""
    if not (n1 and n2 and x2):
        return None, None, None
    rr = (x1 / n1) / (x2 / n2)
    if not x1:
        return rr - 1, None, None
    se = math.sqrt(1 / x1 - 1 / n1 + 1 / x2 - 1 / n2)
    return rr - 1, rr * math.exp(-z * se) - 1, rr * math.exp(z * se) - 1


def z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float | None, float | None]:
    """The pooled two-proportion z statistic and its two-sided p-value."""
    if not n1 or not n2:
        return None, None
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return None, None
    zs = (x1 / n1 - x2 / n2) / se
    return zs, math.erfc(abs(zs) / math.sqrt(2))


@dataclass(frozen=True, slots=True)
class Group:
    reminders: int
    members: int
    repurchased: int
    rate: float
    rate_low: float
    rate_high: float
    revenue: int
    revenue_per_member: float
    points: int
    points_per_member: float


@dataclass(frozen=True, slots=True)
class Uplift:
    absolute: float
    absolute_low: float
    absolute_high: float
    relative: float | None
    relative_low: float | None
    relative_high: float | None
    z: float | None
    p_value: float | None


@dataclass(frozen=True, slots=True)
class Messages:
    sent: int
    failed: int
    skipped: int
    pending: int
    unsubscribed: int
    clicked: int
    clicks: int


@dataclass(frozen=True, slots=True)
class Report:
    merchant: str
    loop: str
    window_days: int
    at: datetime
    open: int
    treated: Group
    control: Group
    uplift: Uplift
    messages: Messages


_REMINDERS = """
SELECT r.id, r.member_id, r.sku, r.control, r.due_at, r.created_at, r.reordered_at,
       COALESCE(w.points, 0) AS points
  FROM reorder_reminders r LEFT JOIN reorder_rewards w ON w.reminder_id = r.id
 WHERE r.merchant_id = $1 AND r.loop_id = $2
"""

_MESSAGES = """
SELECT count(*) FILTER (WHERE state = 'sent') AS sent,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'skipped') AS skipped,
       count(*) FILTER (WHERE state IN ('pending', 'sending')) AS pending,
       count(*) FILTER (WHERE unsubscribed_at IS NOT NULL) AS unsubscribed
  FROM reorder_messages WHERE merchant_id = $1 AND loop_id = $2
"""

_CLICKS = """
SELECT count(DISTINCT c.reminder_id) AS clicked, count(*) AS clicks
  FROM reorder_clicks c JOIN reorder_reminders r ON r.id = c.reminder_id
 WHERE r.merchant_id = $1 AND r.loop_id = $2
"""


def _group(rows: list[Any], revenue: dict[int, int]) -> Group:
    n, x = len(rows), sum(1 for r in rows if r["hit"])
    members = len({r["member_id"] for r in rows})
    low, high = wilson(x, n)
    money = sum(revenue.get(r["id"], 0) for r in rows)
    points = sum(r["points"] for r in rows)
    return Group(
        reminders=n,
        members=members,
        repurchased=x,
        rate=x / n if n else 0.0,
        rate_low=low,
        rate_high=high,
        revenue=money,
        revenue_per_member=money / members if members else 0.0,
        points=points,
        points_per_member=points / members if members else 0.0,
    )


async def report(pool: asyncpg.Pool[Any], loop: Loop, now: datetime | None = None) -> Report:
    now = datetime.now(UTC) if now is None else now
    i = loop.spec.incentive
    days = i.attribution_days if i is not None else DEFAULT_WINDOW_DAYS
    window = timedelta(days=days)
    with translate_errors("reorder report"):
        rows = [dict(r) for r in await pool.fetch(_REMINDERS, loop.merchant, loop.loop)]
        m = await pool.fetchrow(_MESSAGES, loop.merchant, loop.loop)
        c = await pool.fetchrow(_CLICKS, loop.merchant, loop.loop)
    settled = []
    for r in rows:
        end = r["due_at"] + window
        r["hit"] = r["reordered_at"] is not None and r["reordered_at"] <= end
        r["end"] = end
        if r["hit"] or end <= now:
            settled.append(r)
    hits = [r for r in settled if r["hit"]]
    revenue: dict[int, int] = defaultdict(int)
    if hits:
        lines = await bought(
            pool,
            loop.merchant,
            sorted({r["member_id"] for r in hits}),
            sorted({r["sku"] for r in hits}),
        )
        by_member: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for b in lines:
            by_member[(b.member, b.sku)].append(b)
        for r in hits:
            revenue[r["id"]] = sum(
                b.value
                for b in by_member[(r["member_id"], r["sku"])]
                if r["created_at"] <= b.at <= r["end"]
            )
    treated = _group([r for r in settled if not r["control"]], revenue)
    control = _group([r for r in settled if r["control"]], revenue)
    x1, n1, x2, n2 = treated.repurchased, treated.reminders, control.repurchased, control.reminders
    d, lo, hi = newcombe(x1, n1, x2, n2)
    rel, rlo, rhi = relative(x1, n1, x2, n2)
    zs, p = z_test(x1, n1, x2, n2)
    assert m is not None and c is not None
    return Report(
        merchant=loop.merchant,
        loop=loop.loop,
        window_days=days,
        at=now,
        open=len(rows) - len(settled),
        treated=treated,
        control=control,
        uplift=Uplift(d, lo, hi, rel, rlo, rhi, zs, p),
        messages=Messages(
            sent=m["sent"],
            failed=m["failed"],
            skipped=m["skipped"],
            pending=m["pending"],
            unsubscribed=m["unsubscribed"],
            clicked=c["clicked"],
            clicks=c["clicks"],
        ),
    )


def csv_text(r: Report) -> str:
    """The report as CSV: one row per group, the uplift and messages on the treated row."""
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "loop",
            "group",
            "reminders",
            "members",
            "repurchased",
            "rate",
            "rate_low",
            "rate_high",
            "revenue",
            "revenue_per_member",
            "points",
            "points_per_member",
            "uplift",
            "uplift_low",
            "uplift_high",
            "relative_uplift",
            "relative_low",
            "relative_high",
            "p_value",
            "sent",
            "failed",
            "skipped",
            "unsubscribed",
            "clicked",
        ]
    )
    u, msg = r.uplift, r.messages

    def f(v: float | None) -> str:
        return "" if v is None else f"{v:.6f}"

    for name, g in (("treated", r.treated), ("control", r.control)):
        row = [
            r.loop,
            name,
            g.reminders,
            g.members,
            g.repurchased,
            f(g.rate),
            f(g.rate_low),
            f(g.rate_high),
            g.revenue,
            f(g.revenue_per_member),
            g.points,
            f(g.points_per_member),
        ]
        if name == "treated":
            row += [
                f(u.absolute),
                f(u.absolute_low),
                f(u.absolute_high),
                f(u.relative),
                f(u.relative_low),
                f(u.relative_high),
                f(u.p_value),
                msg.sent,
                msg.failed,
                msg.skipped,
                msg.unsubscribed,
                msg.clicked,
            ]
        else:
            row += [""] * 12
        w.writerow(row)
    return out.getvalue()


__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "Group",
    "Messages",
    "Report",
    "Uplift",
    "csv_text",
    "newcombe",
    "relative",
    "report",
    "wilson",
    "z_test",
]
