"""Admin routes answered 500 on bad input instead of a clear 4xx (found in a review of the
rewards and codes; each failed on the old code)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.api import test_admin_api
from tests.api.test_admin_api import Api
from tests.conftest import unique
from tests.loyalty_support import ADMIN, enrol, ok, phone

api = test_admin_api.api  # the fixture: a merchant with a programme


async def status_of(api: Api, method: str, path: str, body: Any = None, **kw: Any) -> int:
    async with api.http.request(method, api.base + path, json=body, headers=ADMIN, **kw) as r:
        await r.read()
        return r.status


async def test_expiry_run_with_a_naive_now_is_400_not_500(api: Api) -> None:
    assert await status_of(api, "POST", "/expiry/run", {"now": "2020-01-01T00:00:00"}) == 400


async def test_tier_evaluation_at_year_one_is_400_not_500(api: Api) -> None:
    assert await status_of(api, "POST", "/tiers/evaluate", {"at": "0001-01-01T00:00:00Z"}) == 400


@pytest.mark.parametrize("field", ["tier_window_days", "code_valid_days", "region", "rounding"])
async def test_programme_null_for_a_required_setting_is_400_not_500(api: Api, field) -> None:
    assert await status_of(api, "PUT", "", {field: None}) == 400


async def test_enrol_email_with_nul_is_400_not_500(api: Api) -> None:
    assert await status_of(api, "POST", "/members", {"email": "a\u0000b@example.com"}) == 400


async def test_lookup_email_with_nul_is_4xx_not_500(api: Api) -> None:
    status = await status_of(api, "GET", "/members", params={"email": "a\u0000b@example.com"})
    assert status in (400, 404)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/members/m%00x", None),
        ("GET", "/members/m%00x/history", None),
        ("DELETE", "/members/m%00x", None),
        ("POST", "/codes/RW%00X/void", {"op": "v1"}),
        ("DELETE", "/rewards/r%00x", None),
        ("DELETE", "/rules/r%00x", None),
    ],
)
async def test_nul_in_a_path_id_is_4xx_not_500(api: Api, method, path, body) -> None:
    assert await status_of(api, method, path, body) in (400, 404)


async def test_tier_evaluation_in_the_future_is_400(api: Api) -> None:
    """An evaluation "as of" years ahead dropped every member's tier for good, where the
    expiry run already refuses a future now."""
    assert await status_of(api, "POST", "/tiers/evaluate", {"at": "2100-01-01T00:00:00Z"}) == 400


@pytest.mark.parametrize(
    "field,instant",
    [
        ("starts_at", "9999-12-31T23:59:59-14:00"),  # year 10000 in UTC
        ("ends_at", "0001-01-01T00:00:00+14:00"),  # year 0 in UTC
    ],
)
async def test_a_rule_instant_outside_the_databases_range_is_400_not_500(
    api: Api, field: str, instant: str
) -> None:
    """Found in review: the year-1 check covered the tier evaluation and the expiry run but
    not a rule's window, and PostgreSQL refused the value (a plain-text 500)."""
    assert await status_of(api, "PUT", "/rules/p1", {"kind": "promotion", field: instant}) == 400


async def test_a_rule_that_ends_before_it_starts_is_400(api: Api) -> None:
    """Found in review: it was stored and listed, and could never apply."""
    body = {
        "kind": "promotion",
        "bonus": 5,
        "starts_at": "2030-01-02T00:00:00Z",
        "ends_at": "2030-01-01T00:00:00Z",
    }
    assert await status_of(api, "PUT", "/rules/p1", body) == 400


async def _waiting_on_locks(pg_dsn: str, n: int) -> None:

    conn = await asyncpg.connect(pg_dsn)
    try:
        for _ in range(100):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            if waiting >= n:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"only {waiting} backends waiting on a lock")
    finally:
        await conn.close()


async def test_two_puts_of_the_tiers_at_once_are_not_a_500(api: Api, pg_dsn: str) -> None:
    """Found in review: two PUT /tiers at once (a retry after a timeout) each deleted the rows
    their snapshot saw, and the second's inserts hit the first's rows: a 500."""

    tiers = {"tiers": [{"id": "silver", "threshold": 100}, {"id": "gold", "threshold": 1000}]}
    assert (await api.call("PUT", "/tiers", tiers))[0] == 200
    merchant = api.base.rsplit("/", 1)[1]
    locker = await asyncpg.connect(pg_dsn)
    try:
        tx = locker.transaction()
        await tx.start()
        # hold both PUTs at their first lock so they run side by side
        await locker.execute(
            "SELECT 1 FROM tiers WHERE merchant_id = $1 AND id = 'silver' FOR UPDATE", merchant
        )
        puts = [asyncio.ensure_future(status_of(api, "PUT", "/tiers", tiers)) for _ in range(2)]
        await _waiting_on_locks(pg_dsn, 1)
        await asyncio.sleep(0.2)
        await tx.rollback()
        assert await asyncio.gather(*puts) == [200, 200]
    finally:
        await locker.close()
    assert [t["id"] for t in (await api.call("GET", "/tiers"))[1]["tiers"]] == ["silver", "gold"]


async def test_a_rule_written_on_this_node_applies_to_its_next_sale(
    api: Api, clients: Any, pg_dsn: str
) -> None:
    """Found in review: a programme load begun before an admin write (a sale in progress)
    finished after the write's invalidation and cached the old rules for 5 s on this node."""

    merchant = api.base.rsplit("/", 1)[1]
    till1 = await clients.pos(merchant, terminal="t1")
    till2 = await clients.pos(merchant, terminal="t2")
    m = (await enrol(till1, phone=phone())).member
    assert (await api.call("PUT", "/rules/warmup", {"kind": "promotion"}))[0] == 200
    locker = await asyncpg.connect(pg_dsn)
    try:
        tx = locker.transaction()
        await tx.start()
        # hold the in-flight load at its last query (tiers), after it has read the rules
        await locker.execute("LOCK TABLE tiers IN ACCESS EXCLUSIVE MODE")
        sale = {"type": "sale", "op": unique("s"), "member": m, "total": 1_000}
        first = asyncio.ensure_future(ok(till1, sale))
        await _waiting_on_locks(pg_dsn, 1)
        bonus = {"kind": "promotion", "bonus": 50}
        assert (await api.call("PUT", "/rules/bonus", bonus))[0] == 200
        await tx.rollback()
        await first
    finally:
        await locker.close()
    receipt = await ok(till2, {"type": "sale", "op": unique("s"), "member": m, "total": 1_000})
    assert {b.rule: b.points for b in receipt.breakdown}.get("promo:bonus") == 50, receipt
