"""Admin routes answered 500 on bad input instead of a clear 4xx (found in a review of the
rewards and codes; each failed on the old code)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api import test_admin_api
from tests.api.test_admin_api import Api
from tests.loyalty.world import ADMIN

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
