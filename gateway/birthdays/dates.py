"""When a birthday is celebrated, as pure functions of the date of birth, the rule's timing,
a time zone and an instant (no I/O, no clock of their own).

The **occasion** of a year is the birthday that year (``day``) or the first day of the birth
month (``month``), as a local date. A 29 February birthday is celebrated on 28 February in a
year that is not a leap year: the same month, so a ``month`` rule, a "birthday this month"
segment and the day all agree, and it comes no later than the date it stands for. An occasion
is **due** from its local midnight for ``GRACE_DAYS`` days: a job that could not run for a
while (an outage) still grants it within that time, and never a week late.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

Timing = Literal["day", "month"]

#: Days after its start an occasion may still be granted (outages shorter than this lose none).
GRACE_DAYS = 7
#: A birthday set or changed fewer than this many days before an occasion's start first counts
#: for the next year's (docs/loyalty.md, "Birthday rewards").
NOTICE_DAYS = 30
NOTICE = timedelta(days=NOTICE_DAYS)
#: Every zone's local date is within a day of UTC's (UTC-12 to UTC+14).
_ZONE_SPREAD = 1


def occasion(month: int, day: int, year: int, timing: Timing) -> date:
    """The local date on which a birthday of ``month``/``day`` is celebrated in ``year``."""
    if timing == "month":
        return date(year, month, 1)
    if month == 2 and day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def occasion_start(day: date, zone: tzinfo) -> datetime:
    """The instant the local date ``day`` begins in ``zone``."""
    return datetime.combine(day, time(), tzinfo=zone)


def due(
    month: int, day: int, timing: Timing, zone: tzinfo, now: datetime
) -> tuple[int, date] | None:
    """The year whose occasion is due at ``now`` in ``zone`` (begun there at most
    ``GRACE_DAYS`` ago), and that occasion; None when none is."""
    today = now.astimezone(zone).date()
    for year in (today.year, today.year - 1):
        o = occasion(month, day, year, timing)
        if o <= today < o + timedelta(days=GRACE_DAYS):
            return year, o
    return None


def birthdays_to_read(now: datetime, timing: Timing) -> list[tuple[int, int]]:
    """Every (month, day) of birth whose occasion may be due somewhere at ``now``: a superset,
    which ``due`` then decides member by member in the member's zone."""
    utc_today = now.astimezone(UTC).date()
    first = utc_today - timedelta(days=GRACE_DAYS - 1 + _ZONE_SPREAD)
    last = utc_today + timedelta(days=_ZONE_SPREAD)
    span = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    found: set[tuple[int, int]] = set()
    for d in span:
        if timing == "month":
            if d.day == 1:
                # 29 February is read too: its month begins on 1 February every year
                last_day = 29 if d.month == 2 else calendar.monthrange(2001, d.month)[1]
                found.update((d.month, n) for n in range(1, last_day + 1))
        else:
            found.add((d.month, d.day))
            if d.month == 2 and d.day == 28 and not calendar.isleap(d.year):
                found.add((2, 29))
    return sorted(found)


__all__ = [
    "GRACE_DAYS",
    "NOTICE",
    "NOTICE_DAYS",
    "Timing",
    "birthdays_to_read",
    "due",
    "occasion",
    "occasion_start",
]
