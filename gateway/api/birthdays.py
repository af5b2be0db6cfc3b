"""Admin routes of the birthday rule (``gateway.birthdays``), under the admin API's prefix and
behind its authentication (``admin.auth_middleware``): ``GET``, ``PUT`` and ``DELETE
/admin/v1/merchants/{merchant}/birthday``. Another merchant's token, or an unknown merchant,
answers 404 ``not_found`` as on every admin route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from gateway.api.answers import json_answer as _json
from gateway.birthdays import BirthdayRule, Birthdays, RuleSpec
from protocol.limits import MAX_POINTS, Id
from protocol.wallet import TimeZone

#: Every route: method, path under the admin prefix, and the ``BirthdayApi`` method serving it.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/birthday", "get_rule"),
    ("PUT", "/birthday", "put_rule"),
    ("DELETE", "/birthday", "delete_rule"),
]


class BirthdayRuleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The merchant's birthday rule. ``grant`` ``points`` takes ``points``; ``reward`` takes
    ``reward``, a reward of the catalogue granted as a code that costs no points."""

    grant: Literal["points", "reward"]
    points: (
        Annotated[
            int,
            msgspec.Meta(ge=1, le=MAX_POINTS, description="Points granted (a points grant)."),
        ]
        | None
    ) = None
    reward: Id | None = None
    """The reward whose code is granted (a reward grant); it must be in the catalogue and not
    withdrawn (else 404 reward_not_found)."""
    timing: Literal["day", "month"] = "day"
    """On the birthday, or on the first day of the birth month (29 February: 28 February in a
    year that is not a leap year)."""
    zone: Literal["member", "programme"] = "member"
    """Whose midnight starts the day: the member's own time zone (its profile's, else
    ``time_zone``), or always ``time_zone``."""
    time_zone: TimeZone = "UTC"
    """The programme's (its stores') IANA time zone; an unknown one is 400
    time_zone_unknown."""

    def __post_init__(self) -> None:
        if self.grant == "points" and (self.points is None or self.reward is not None):
            raise ValueError("a points grant takes `points` (and no `reward`)")
        if self.grant == "reward" and (self.reward is None or self.points is not None):
            raise ValueError("a reward grant takes `reward` (and no `points`)")


class BirthdayRuleOut(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    merchant: str
    grant: Literal["points", "reward"]
    points: int | None
    reward: str | None
    timing: Literal["day", "month"]
    zone: Literal["member", "programme"]
    time_zone: str
    since: str
    """When the rule was first created (ISO 8601): an occasion whose day had ended by then is
    not granted. Kept by updates; a deleted rule created again starts anew."""
    updated_at: str


class BirthdayRuleDeleted(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    deleted: Literal["birthday"]


def rule_out(r: BirthdayRule) -> BirthdayRuleOut:
    return BirthdayRuleOut(
        merchant=r.merchant,
        grant=r.grant,
        points=r.points,
        reward=r.reward,
        timing=r.timing,
        zone=r.zone,
        time_zone=r.time_zone,
        since=r.since.isoformat(),
        updated_at=r.updated_at.isoformat(),
    )


def _not_found() -> web.Response:
    return _json({"error": "not_found", "message": "no birthday rule"}, 404)


class BirthdayApi:
    """The routes over ``birthdays``; ``merchant`` is the admin API's check of the path's
    merchant (it raises when the merchant does not exist)."""

    def __init__(
        self, birthdays: Birthdays, merchant: Callable[[web.Request], Awaitable[str]]
    ) -> None:
        self._birthdays = birthdays
        self._merchant = merchant

    def setup(self, app: web.Application, prefix: str) -> None:
        for method, path, name in ROUTES:
            app.router.add_route(method, prefix + path, getattr(self, name))

    async def get_rule(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        rule = await self._birthdays.rule(merchant)
        return _not_found() if rule is None else _json(rule_out(rule))

    async def put_rule(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        try:
            b = msgspec.json.decode(await request.read() or b"{}", type=BirthdayRuleIn)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _json({"error": "invalid_field", "message": str(exc)}, 400)
        spec = RuleSpec(
            grant=b.grant,
            points=b.points,
            reward=b.reward,
            timing=b.timing,
            zone=b.zone,
            time_zone=b.time_zone,
        )
        return _json(rule_out(await self._birthdays.put_rule(merchant, spec)))

    async def delete_rule(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        if not await self._birthdays.delete_rule(merchant):
            return _not_found()
        return _json(BirthdayRuleDeleted(deleted="birthday"))


__all__ = ["ROUTES", "BirthdayApi", "BirthdayRuleDeleted", "BirthdayRuleIn", "BirthdayRuleOut"]
