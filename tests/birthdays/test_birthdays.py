"""Birthday rewards: the rule through the admin API, the job that grants it on the day (or the
first of the month) in the member's or the programme's time zone, exactly once per member and
year (two passes at once, two node processes, a crash after a commit and a rerun), the notice
policy for a birthday set close to the date, 29 February, isolation between merchants, bad
input, and the live pushes (``balance_changed`` with cause ``birthday``, ``code_changed``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gateway.app import ATTACHMENTS
from gateway.birthdays import Birthdays, grant_op
from gateway.fanout import MemberEvents
from gateway.ledger import Ledger
from gateway.programme import Programmes
from gateway.settings import LedgerSettings
from gateway.store.keys import Keys
from gateway.store.redis import create_client
from protocol.messages import BalanceChanged
from protocol.wallet import CodeChanged
from tests.conftest import REDIS_URL, unique
from tests.loyalty_support import (
    add_reward,
    admin,
    enrol,
    err,
    fetch,
    next_push,
    ok,
    phone,
    setup_db,
)
from tests.support import NodeProcess, WsClient


def at(text: str) -> datetime:
    """An instant written with its offset: ``at("2027-03-09T10:59:00+00:00")``."""
    return datetime.fromisoformat(text)


async def put_rule(http: Any, rn: Any, merchant: str, **body: Any) -> tuple[int, Any]:
    return await admin(http, "PUT", f"{rn.url}/admin/v1/merchants/{merchant}/birthday", json=body)


async def rule_of(http: Any, rn: Any, merchant: str, **body: Any) -> Any:
    """Set the merchant's rule and date it a year back (it applies to the occasions tested)."""
    status, reply = await put_rule(http, rn, merchant, **body)
    assert status == 200, reply
    await setup_db(
        rn_dsn(rn),
        "UPDATE birthday_rules SET since = since - interval '2 years' WHERE merchant_id = $1",
        merchant,
    )
    return reply


def rn_dsn(rn: Any) -> str:
    return str(rn.node.settings.store.database_url)


async def born(
    till: WsClient,
    pg_dsn: str,
    month: int,
    day: int,
    *,
    zone: str | None = None,
    set_at: datetime | None = datetime(2000, 1, 1, tzinfo=UTC),
) -> str:
    """A new member born on ``month``/``day`` (in ``zone``), its birthday set at ``set_at``
    (long ago by default: the notice rule is tested on its own)."""
    m = str((await enrol(till, phone=phone())).member)
    fields: dict[str, Any] = {"birthday": {"month": month, "day": day}}
    if zone is not None:
        fields["time_zone"] = zone
    await ok(till, {"type": "update_profile", "member": m, **fields})
    if set_at is not None:
        await setup_db(
            pg_dsn,
            "UPDATE member_profiles SET birthday_set_at = $2 WHERE member_id = $1",
            m,
            set_at,
        )
    return m


async def entries(pg_dsn: str, members: list[str]) -> dict[str, list[int]]:
    """Each member's birthday entries (their points)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            """SELECT member_id, posted_delta FROM ledger_entries
                WHERE member_id = ANY($1::text[]) AND kind = 'birthday' ORDER BY version""",
            members,
        )
    finally:
        await conn.close()
    out: dict[str, list[int]] = {m: [] for m in members}
    for r in rows:
        out[r["member_id"]].append(r["posted_delta"])
    return out


# ----------------------------------------------------------------------------- granting


async def test_points_on_the_day_in_the_members_zone_not_the_day_before_there(
    http, rn, clients, merchant, pg_dsn
):
    await rule_of(http, rn, merchant, grant="points", points=500, time_zone="Europe/Paris")
    till = await clients.pos(merchant)
    # 10 March 2027 begins at 09 March 11:00 UTC in Auckland (NZDT, +13), 10 March 08:00 UTC
    # in Los Angeles (PST, -8), 09 March 23:00 UTC in Paris (CET, +1: no zone of its own)
    nz = await born(till, pg_dsn, 3, 10, zone="Pacific/Auckland")
    la = await born(till, pg_dsn, 3, 10, zone="America/Los_Angeles")
    paris = await born(till, pg_dsn, 3, 10)
    app = await clients.app(merchant, nz)
    await ok(app, {"type": "subscribe", "member": nz})
    job = rn.node.birthdays
    await job.run(at("2027-03-09T10:59:59+00:00"), merchant)  # 23:59:59 on the 9th there
    assert await entries(pg_dsn, [nz, la, paris]) == {nz: [], la: [], paris: []}
    done = await job.run(at("2027-03-09T11:00:00+00:00"), merchant)
    assert done.granted == 1
    push = await next_push(app, BalanceChanged)
    assert (push.cause.kind, push.available, push.cause.op) == ("birthday", 500, grant_op(nz, 2027))
    await job.run(at("2027-03-09T23:00:00+00:00"), merchant)  # midnight in Paris
    await job.run(at("2027-03-10T07:59:00+00:00"), merchant)  # 23:59 on the 9th in LA
    assert await entries(pg_dsn, [nz, la, paris]) == {nz: [500], la: [], paris: [500]}
    await job.run(at("2027-03-10T08:00:00+00:00"), merchant)
    await job.run(at("2027-03-11T12:00:00+00:00"), merchant)  # later passes grant nothing more
    assert await entries(pg_dsn, [nz, la, paris]) == {nz: [500], la: [500], paris: [500]}
    assert (await ok(till, {"type": "balance", "member": la})).available == 500
    grants = await fetch(
        pg_dsn,
        "SELECT member_id, year, announced FROM birthday_grants WHERE merchant_id = $1",
        merchant,
    )
    assert sorted((g["member_id"], g["year"], g["announced"]) for g in grants) == sorted(
        (m, 2027, True) for m in (nz, la, paris)
    )


async def test_the_programmes_zone_when_the_rule_says_so(http, rn, clients, merchant, pg_dsn):
    await rule_of(
        http, rn, merchant, grant="points", points=10, zone="programme", time_zone="Asia/Tokyo"
    )
    till = await clients.pos(merchant)
    nz = await born(till, pg_dsn, 7, 1, zone="Pacific/Auckland")
    # 1 July begins in Tokyo (+9) at 30 June 15:00 UTC, in Auckland (NZST, +12) three hours
    # earlier: the member's own zone does not count
    await rn.node.birthdays.run(at("2027-06-30T14:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [nz]) == {nz: []}
    await rn.node.birthdays.run(at("2027-06-30T15:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [nz]) == {nz: [10]}


async def test_a_coupon_granted_with_points_0_is_in_the_members_codes(
    http, rn, clients, merchant, pg_dsn
):
    await add_reward(pg_dsn, merchant, "cake", 900, 500, "Birthday cake")
    await rule_of(http, rn, merchant, grant="reward", reward="cake")
    till = await clients.pos(merchant)
    m = await born(till, pg_dsn, 5, 4)
    app = await clients.app(merchant, m)
    await ok(app, {"type": "wallet", "member": m})
    done = await rn.node.birthdays.run(at("2027-05-04T09:00:00+00:00"), merchant)
    assert done.granted == 1
    pushed = await next_push(app, CodeChanged)
    assert (pushed.code.reward, pushed.code.points, pushed.code.status) == ("cake", 0, "issued")
    codes = (await ok(app, {"type": "codes", "member": m, "status": "active"})).codes
    assert [(c.code, c.reward, c.points, c.name, c.value) for c in codes] == [
        (pushed.code.code, "cake", 0, "Birthday cake", 500)
    ]
    balance = await ok(till, {"type": "balance", "member": m})
    assert (balance.posted, balance.version) == (0, 0)  # no points moved, none spent
    await rn.node.birthdays.run(at("2027-05-05T09:00:00+00:00"), merchant)
    assert len((await ok(app, {"type": "codes", "member": m})).codes) == 1
    # the coupon is used at a register like any code
    used = await ok(till, {"type": "use_code", "op": unique("u"), "code": pushed.code.code})
    assert used.status == "redeemed"
    status, export = await admin(
        http, "GET", f"{rn.url}/admin/v1/merchants/{merchant}/members/{m}/export"
    )
    assert status == 200
    assert [(g["year"], g["grant"], g["reward"], g["code"]) for g in export["birthday_grants"]] == [
        (2027, "reward", "cake", pushed.code.code)
    ]


async def test_once_a_year_and_again_the_next(http, rn, clients, merchant, pg_dsn):
    await rule_of(http, rn, merchant, grant="points", points=25)
    till = await clients.pos(merchant)
    m = await born(till, pg_dsn, 8, 20)
    job = rn.node.birthdays
    for day in ("2027-08-20", "2027-08-21", "2027-08-26"):
        await job.run(at(f"{day}T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [m]) == {m: [25]}
    await job.run(at("2028-08-20T12:00:00+00:00"), merchant)
    await job.run(at("2028-08-22T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [m]) == {m: [25, 25]}
    years = await fetch(pg_dsn, "SELECT year FROM birthday_grants WHERE member_id = $1", m)
    assert sorted(r["year"] for r in years) == [2027, 2028]


async def test_a_late_pass_grants_within_the_grace_days_only(http, rn, clients, merchant, pg_dsn):
    """An occasion is due on its day and the GRACE_DAYS - 1 days after it, to the minute of
    its local midnight: a job down for less than that loses no birthday, and none is paid a
    week late."""
    await rule_of(http, rn, merchant, grant="points", points=5)
    till = await clients.pos(merchant)
    gone, late = await born(till, pg_dsn, 4, 1), await born(till, pg_dsn, 4, 2)
    # a pass on 8 April: 2 April's occasion began 6 days ago, 1 April's 7 days ago
    await rn.node.birthdays.run(at("2027-04-08T12:00:00+00:00"), merchant)
    await rn.node.birthdays.run(at("2027-04-09T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [gone, late]) == {gone: [], late: [5]}
    last, lost = await born(till, pg_dsn, 4, 10), await born(till, pg_dsn, 4, 9)
    # the last minute of 16 April (UTC, the programme's zone): 10 April's last day of grace
    await rn.node.birthdays.run(at("2027-04-16T23:59:00+00:00"), merchant)
    await rn.node.birthdays.run(at("2027-04-17T00:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [last, lost]) == {last: [5], lost: []}


async def test_the_first_of_the_birth_month(http, rn, clients, merchant, pg_dsn):
    await rule_of(http, rn, merchant, grant="points", points=40, timing="month")
    till = await clients.pos(merchant)
    m = await born(till, pg_dsn, 3, 20, zone="Europe/Berlin")
    await rn.node.birthdays.run(at("2027-02-28T22:59:00+00:00"), merchant)  # 23:59 in Berlin
    assert await entries(pg_dsn, [m]) == {m: []}
    await rn.node.birthdays.run(at("2027-02-28T23:00:00+00:00"), merchant)
    await rn.node.birthdays.run(at("2027-03-20T12:00:00+00:00"), merchant)  # the day itself
    assert await entries(pg_dsn, [m]) == {m: [40]}


async def test_29_february_is_28_february_in_other_years(http, rn, clients, merchant, pg_dsn):
    await rule_of(http, rn, merchant, grant="points", points=29)
    till = await clients.pos(merchant)
    m = await born(till, pg_dsn, 2, 29)
    job = rn.node.birthdays
    await job.run(at("2027-02-27T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [m]) == {m: []}
    await job.run(at("2027-02-28T00:00:00+00:00"), merchant)
    await job.run(at("2027-03-01T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [m]) == {m: [29]}
    await job.run(at("2028-02-28T12:00:00+00:00"), merchant)  # 2028 is a leap year
    assert await entries(pg_dsn, [m]) == {m: [29]}
    await job.run(at("2028-02-29T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [m]) == {m: [29, 29]}


# ----------------------------------------------------------------------------- the notice


async def test_a_birthday_set_close_to_the_date_first_counts_next_year(
    http, rn, clients, merchant, pg_dsn
):
    await rule_of(http, rn, merchant, grant="points", points=100)
    till = await clients.pos(merchant)
    # 15 June 2027 begins at 00:00 UTC (no zone): 30 days before is 16 May 00:00 UTC
    close = await born(till, pg_dsn, 6, 15, set_at=at("2027-05-16T00:00:01+00:00"))
    in_time = await born(till, pg_dsn, 6, 15, set_at=at("2027-05-16T00:00:00+00:00"))
    job = rn.node.birthdays
    done = await job.run(at("2027-06-15T12:00:00+00:00"), merchant)
    assert (done.granted, done.deferred) == (1, 1)
    assert await entries(pg_dsn, [close, in_time]) == {close: [], in_time: [100]}
    # the granted member moves its birthday to later that year: still one grant in 2027
    await ok(
        till, {"type": "update_profile", "member": in_time, "birthday": {"month": 9, "day": 1}}
    )
    await setup_db(
        pg_dsn,
        "UPDATE member_profiles SET birthday_set_at = '2027-06-16Z' WHERE member_id = $1",
        in_time,
    )
    await job.run(at("2027-09-01T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [close, in_time]) == {close: [], in_time: [100]}
    await job.run(at("2028-06-15T12:00:00+00:00"), merchant)
    await job.run(at("2028-09-01T12:00:00+00:00"), merchant)
    assert await entries(pg_dsn, [close, in_time]) == {close: [100], in_time: [100, 100]}


async def test_the_profile_stamps_when_the_birthday_changed(clients, merchant, pg_dsn, rn):
    till = await clients.pos(merchant)
    m = await born(till, pg_dsn, 1, 2, set_at=None)

    async def stamped() -> datetime:
        rows = await fetch(
            pg_dsn, "SELECT birthday_set_at FROM member_profiles WHERE member_id = $1", m
        )
        return rows[0]["birthday_set_at"]

    first = await stamped()
    assert abs(first - datetime.now(UTC)) < timedelta(minutes=5)
    await setup_db(
        pg_dsn,
        "UPDATE member_profiles SET birthday_set_at = '2020-01-01Z' WHERE member_id = $1",
        m,
    )
    # the same day again, a year, a name, a time zone: the birthday did not change
    await ok(till, {"type": "update_profile", "member": m, "birthday": {"month": 1, "day": 2}})
    await ok(
        till,
        {"type": "update_profile", "member": m, "birthday": {"month": 1, "day": 2, "year": 1990}},
    )
    await ok(till, {"type": "update_profile", "member": m, "name": "Ada", "time_zone": "UTC"})
    assert await stamped() == datetime(2020, 1, 1, tzinfo=UTC)
    await ok(till, {"type": "update_profile", "member": m, "birthday": {"month": 1, "day": 3}})
    assert await stamped() > datetime(2026, 1, 1, tzinfo=UTC)


async def test_occasions_over_before_the_rule_existed_are_not_granted(
    http, rn, clients, merchant, pg_dsn
):
    till = await clients.pos(merchant)
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    on_the_day = await born(till, pg_dsn, today.month, today.day)
    before = await born(till, pg_dsn, yesterday.month, yesterday.day)
    status, _ = await put_rule(http, rn, merchant, grant="points", points=3)
    assert status == 200
    await rn.node.birthdays.run(None, merchant)
    assert await entries(pg_dsn, [on_the_day, before]) == {on_the_day: [3], before: []}


# ----------------------------------------------------------------------------- exactly once


async def _second_node(pg_dsn: str, prefix: str) -> tuple[Birthdays, Any]:
    """Another node's job over the same database: its own pool, ledger lanes and publisher."""
    from gateway.fanout import Publisher
    from gateway.store.redis import CacheEpoch

    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    redis = create_client(REDIS_URL)
    keys = Keys(prefix)
    ledger = Ledger(
        pg_dsn,
        LedgerSettings(),
        Publisher(redis, keys, epoch=CacheEpoch()),
        attachments=ATTACHMENTS,
    )
    await ledger.start()
    job = Birthdays(pool, ledger, Programmes(pool), MemberEvents(redis, keys, lambda: ()), 0)

    async def close() -> None:
        await ledger.close()
        await redis.aclose()
        await pool.close()

    return job, close


@pytest.mark.parametrize("grant", ["points", "reward"])
async def test_exactly_once_with_passes_on_two_nodes_at_once(
    http, rn, clients, merchant, pg_dsn, redis_prefix, grant
):
    if grant == "reward":
        await add_reward(pg_dsn, merchant, "gift", 50, 300)
        await rule_of(http, rn, merchant, grant="reward", reward="gift")
    else:
        await rule_of(http, rn, merchant, grant="points", points=70)
    till = await clients.pos(merchant)
    members = [await born(till, pg_dsn, 11, 11, zone="Europe/Paris") for _ in range(30)]
    other, close = await _second_node(pg_dsn, redis_prefix)
    now = at("2027-11-11T08:00:00+00:00")
    try:
        await asyncio.gather(
            rn.node.birthdays.run(now, merchant),
            other.run(now, merchant),
            rn.node.birthdays.run(now, merchant),
            other.run(now, merchant),
        )
    finally:
        await close()
    grants = await fetch(
        pg_dsn, "SELECT member_id, year FROM birthday_grants WHERE merchant_id = $1", merchant
    )
    assert sorted((g["member_id"], g["year"]) for g in grants) == sorted((m, 2027) for m in members)
    codes = await fetch(
        pg_dsn,
        "SELECT member_id, count(*) AS n FROM reward_codes WHERE merchant_id = $1 GROUP BY 1",
        merchant,
    )
    if grant == "points":
        assert await entries(pg_dsn, members) == {m: [70] for m in members}
        assert codes == []
    else:
        assert await entries(pg_dsn, members) == {m: [] for m in members}
        assert sorted((c["member_id"], c["n"]) for c in codes) == sorted((m, 1) for m in members)


def _env(pg_dsn: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": pg_dsn,
            "REDIS_URL": REDIS_URL,
            "GATEWAY_REDIS_PREFIX": prefix,
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


async def _born_today_in_utc(http, rn, clients, merchant, pg_dsn, n: int) -> list[str]:
    """``n`` members whose occasion is due now (their birthday today, the programme's zone
    UTC), for the jobs that run on the real clock."""
    status, _ = await put_rule(http, rn, merchant, grant="reward", reward="gift", zone="programme")
    assert status == 200
    till = await clients.pos(merchant)
    today = datetime.now(UTC).date()
    return [await born(till, pg_dsn, today.month, today.day) for _ in range(n)]


@pytest.mark.slow
async def test_exactly_once_with_two_node_processes_running_the_job(
    http, rn, clients, merchant, pg_dsn, redis_prefix
):
    await add_reward(pg_dsn, merchant, "gift", 50, 300)
    members = await _born_today_in_utc(http, rn, clients, merchant, pg_dsn, 40)
    prefix = f"{redis_prefix}b"
    nodes = [
        NodeProcess(pg_dsn, REDIS_URL, prefix, f"bd-{i}", {"GATEWAY_BIRTHDAY_SECONDS": "0.2"})
        for i in range(2)
    ]
    try:
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            rows = await fetch(
                pg_dsn, "SELECT count(*) AS n FROM birthday_grants WHERE merchant_id = $1", merchant
            )
            if rows[0]["n"] == len(members):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # more passes on both nodes, which must grant nothing more
    finally:
        for n in nodes:
            n.terminate()
        for n in nodes:
            n.wait()
    codes = await fetch(
        pg_dsn,
        "SELECT member_id, count(*) AS n FROM reward_codes WHERE merchant_id = $1 GROUP BY 1",
        merchant,
    )
    assert sorted((c["member_id"], c["n"]) for c in codes) == sorted((m, 1) for m in members)
    ops = await fetch(
        pg_dsn,
        "SELECT count(*) AS n FROM operations WHERE merchant_id = $1 AND op_id LIKE '~birthday/%'",
        merchant,
    )
    assert ops[0]["n"] == len(members)


@pytest.mark.slow
async def test_a_pass_killed_after_a_commit_then_run_again_grants_each_once(
    http, rn, clients, merchant, pg_dsn, redis_prefix
):
    await add_reward(pg_dsn, merchant, "gift", 50, 300)
    members = await _born_today_in_utc(http, rn, clients, merchant, pg_dsn, 60)
    cmd = [sys.executable, "-m", "gateway", "birthdays"]
    crashed = await asyncio.to_thread(
        subprocess.run,
        cmd,
        env=_env(
            pg_dsn,
            redis_prefix,
            GATEWAY_FAULT_CRASH_AFTER_COMMIT="~birthday/",
            GATEWAY_LEDGER_LANES="1",
            GATEWAY_LEDGER_MAX_BATCH="16",
        ),
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    first = await fetch(
        pg_dsn,
        "SELECT member_id, announced FROM birthday_grants WHERE merchant_id = $1",
        merchant,
    )
    assert 0 < len(first) < len(members)  # the crash came after the first committed batch
    assert not any(g["announced"] for g in first)  # and before its pushes
    rerun = await asyncio.to_thread(
        subprocess.run, cmd, env=_env(pg_dsn, redis_prefix), capture_output=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert b"granted" in rerun.stdout
    codes = await fetch(
        pg_dsn,
        "SELECT member_id, count(*) AS n, max(points) AS p FROM reward_codes"
        " WHERE merchant_id = $1 GROUP BY 1",
        merchant,
    )
    assert sorted((c["member_id"], c["n"], c["p"]) for c in codes) == sorted(
        (m, 1, 0) for m in members
    )
    # the crashed batch's coupons are pushed by a later pass, once they are a minute old
    await setup_db(
        pg_dsn,
        "UPDATE birthday_grants SET granted_at = granted_at - interval '2 minutes'"
        " WHERE merchant_id = $1",
        merchant,
    )
    done = await rn.node.birthdays.run(None, merchant)
    assert done.granted == 0 and done.announced >= len(first)
    left = await fetch(
        pg_dsn,
        "SELECT count(*) AS n FROM birthday_grants WHERE merchant_id = $1 AND NOT announced",
        merchant,
    )
    assert left[0]["n"] == 0


# ----------------------------------------------------------------------------- isolation


async def test_another_merchants_rule_never_applies(http, rn, clients, merchant, pg_dsn):
    from tests.loyalty_support import new_merchant

    other = await new_merchant(pg_dsn)
    await rule_of(http, rn, merchant, grant="points", points=11)
    mine = await born(await clients.pos(merchant), pg_dsn, 10, 3)
    theirs = await born(await clients.pos(other), pg_dsn, 10, 3)
    job = rn.node.birthdays
    await job.run(at("2027-10-03T12:00:00+00:00"))  # every merchant's rule
    assert await entries(pg_dsn, [mine, theirs]) == {mine: [11], theirs: []}
    await rule_of(http, rn, other, grant="points", points=22)
    await job.run(at("2027-10-04T12:00:00+00:00"), merchant)  # only the first merchant's
    assert await entries(pg_dsn, [mine, theirs]) == {mine: [11], theirs: []}
    await job.run(at("2027-10-04T12:00:00+00:00"), other)
    assert await entries(pg_dsn, [mine, theirs]) == {mine: [11], theirs: [22]}


async def test_the_rule_routes_refuse_another_merchant(http, rn, merchant, pg_dsn):
    from tests.loyalty_support import new_merchant

    other = await new_merchant(pg_dsn)
    base = f"{rn.url}/admin/v1/merchants"
    assert (await put_rule(http, rn, merchant, grant="points", points=5))[0] == 200
    assert (await admin(http, "GET", f"{base}/{other}/birthday"))[0] == 404
    assert (await admin(http, "DELETE", f"{base}/{other}/birthday"))[0] == 404
    ghost = unique("mer")
    for method, body in (
        ("GET", None),
        ("PUT", {"grant": "points", "points": 1}),
        ("DELETE", None),
    ):
        status, reply = await admin(http, method, f"{base}/{ghost}/birthday", json=body)
        assert (status, reply["error"]) == (404, "not_found"), method
    # a merchant's own admin token reaches its rule only (see tests/api/test_merchant_keys.py
    # for the tokens): here the operator's token on the other merchant left this one's alone
    status, rule = await admin(http, "GET", f"{base}/{merchant}/birthday")
    assert (status, rule["points"]) == (200, 5)


# ----------------------------------------------------------------------------- bad input


async def test_bad_rules_are_refused_and_change_nothing(http, rn, merchant, pg_dsn):
    await add_reward(pg_dsn, merchant, "gone", 10, 100)
    await setup_db(
        pg_dsn, "UPDATE rewards SET active = false WHERE merchant_id = $1 AND id = 'gone'", merchant
    )
    url = f"{rn.url}/admin/v1/merchants/{merchant}/birthday"
    assert (await admin(http, "GET", url))[0] == 404
    refused = [
        ({"grant": "reward", "reward": "nope"}, 404, "reward_not_found"),
        ({"grant": "reward", "reward": "gone"}, 404, "reward_not_found"),
        ({"grant": "points", "points": -5}, 400, "invalid_field"),
        ({"grant": "points", "points": 0}, 400, "invalid_field"),
        ({"grant": "points"}, 400, "invalid_field"),
        ({"grant": "points", "points": 5, "reward": "gone"}, 400, "invalid_field"),
        (
            {"grant": "points", "points": 5, "time_zone": "Mars/Olympus_Mons"},
            400,
            "time_zone_unknown",
        ),
        ({"grant": "points", "points": 5, "time_zone": "../../etc/passwd"}, 400, "invalid_field"),
        ({"grant": "points", "points": 5, "timing": "week"}, 400, "invalid_field"),
        ({"grant": "points", "points": 5, "extra": 1}, 400, "invalid_field"),
    ]
    for body, status, code in refused:
        got, reply = await admin(http, "PUT", url, json=body)
        assert (got, reply["error"]) == (status, code), body
    assert (await admin(http, "GET", url))[0] == 404  # nothing was created
    status, first = await admin(http, "PUT", url, json={"grant": "points", "points": 5})
    assert status == 200 and first["zone"] == "member" and first["time_zone"] == "UTC"
    for body, status, code in refused:
        got, reply = await admin(http, "PUT", url, json=body)
        assert (got, reply["error"]) == (status, code), body
    assert (await admin(http, "GET", url))[1] == first  # nor changed
    await add_reward(pg_dsn, merchant, "cake", 10, 100)
    status, second = await admin(
        http,
        "PUT",
        url,
        json={"grant": "reward", "reward": "cake", "timing": "month", "time_zone": "Asia/Kolkata"},
    )
    assert status == 200 and (second["reward"], second["points"], second["timing"]) == (
        "cake",
        None,
        "month",
    )
    assert second["since"] == first["since"]  # an update keeps when the rule began
    assert (await admin(http, "DELETE", url)) == (200, {"deleted": "birthday"})
    assert (await admin(http, "DELETE", url))[0] == 404


async def test_bad_profile_input_is_refused_and_changes_nothing(clients, merchant, pg_dsn, rn):
    till = await clients.pos(merchant)
    m = await born(till, pg_dsn, 12, 24, zone="Europe/Madrid")
    app = await clients.app(merchant, m)
    for fields, code in (
        ({"birthday": {"month": 2, "day": 31}, "time_zone": "Asia/Tokyo"}, "invalid_field"),
        ({"time_zone": "Mars/Olympus_Mons", "name": "Bob"}, "time_zone_unknown"),
        ({"time_zone": "Europe/madrid"}, "time_zone_unknown"),
        ({"time_zone": "Europe/Paris", "clear_time_zone": True}, "invalid_field"),
        ({"time_zone": "/etc/localtime"}, "invalid_field"),
        ({"time_zone": "x" * 65}, "invalid_field"),
    ):
        reply = await err(app, {"type": "update_profile", "member": m, **fields})
        assert reply.code == code, fields
    profile = (await ok(app, {"type": "wallet", "member": m})).profile
    assert (profile.birthday.month, profile.birthday.day) == (12, 24)
    assert profile.time_zone == "Europe/Madrid" and profile.name == ""
    done = await ok(app, {"type": "update_profile", "member": m, "time_zone": "America/Sao_Paulo"})
    assert done.time_zone == "America/Sao_Paulo"
    cleared = await ok(app, {"type": "update_profile", "member": m, "clear_time_zone": True})
    assert cleared.time_zone is None
