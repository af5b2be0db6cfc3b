"""Admin HTTP API: a merchant's programme (currency, rate, rounding, rules, tiers, rewards) and
its members (enrol, look up, history, export, erase), plus the tier evaluation and points
expiry jobs.

Every route is under ``/admin/v1/merchants/{merchant}`` and needs ``Authorization: Bearer
<GATEWAY_ADMIN_TOKEN>`` (the operator's: every merchant) or one of that merchant's admin
tokens (``gateway/merchant_keys.py``); a merchant's token naming another merchant is answered
as an unknown merchant (404). Every query is scoped by the merchant in the path: another merchant's
member, rule, reward or code answers 404 exactly like one that does not exist.

``AdminApi`` holds the domain services the routes call (passed in by the node) and mounts
them with ``setup``; every SQL statement behind them is the services' own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from gateway import logs
from gateway.adjustments import Adjustments
from gateway.api.adjustments import REACH, AdjustmentApi
from gateway.api.answers import json_answer as _json
from gateway.api.answers import refusal as _error
from gateway.api.birthdays import BirthdayApi
from gateway.api.bodies import (
    EnrolIn,
    EvaluateIn,
    ExpiryIn,
    MergeIn,
    ProgrammeIn,
    RewardIn,
    RuleIn,
    TiersIn,
    VoidIn,
)
from gateway.api.catalogue import CatalogueApi
from gateway.api.offers import OfferApi
from gateway.api.reorder import ReorderApi
from gateway.api.segments import SegmentApi
from gateway.api.webhooks import WebhookApi
from gateway.birthdays import Birthdays
from gateway.catalogue import Catalogue
from gateway.errors import GatewayError
from gateway.expiry import PointsExpiry
from gateway.ledger import Origin
from gateway.members import Members, Merger, Privacy
from gateway.merchant_keys import ANY_MERCHANT, MerchantKeys, admin_reach
from gateway.offers import Offers
from gateway.programme import ProgrammeConfig, Reward, Rule, Tier
from gateway.purchases import Sales
from gateway.reorder import Reorder
from gateway.rewards import Rewards
from gateway.segments import Segments
from gateway.tiers import Tiers
from gateway.webhooks import Webhooks
from protocol.codes import ErrorCode
from protocol.limits import ID_PATTERN

PREFIX = "/admin/v1/merchants/{merchant}"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
#: How far ahead of this node's clock an expiry run's ``now`` or a tier evaluation's ``at``
#: may be (clock skew) before it is refused; within it, the instant is read as the database's
#: clock, so nothing expires and no tier drops early.
EXPIRY_SKEW = timedelta(seconds=60)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS = {
    ErrorCode.INVALID_FIELD: 400,
    ErrorCode.IDENTITY_INVALID: 400,
    ErrorCode.TIME_ZONE_UNKNOWN: 400,
    ErrorCode.FORBIDDEN: 404,
    ErrorCode.MEMBER_NOT_FOUND: 404,
    ErrorCode.REWARD_NOT_FOUND: 404,
    ErrorCode.CODE_NOT_FOUND: 404,
    ErrorCode.SALE_NOT_FOUND: 404,
    ErrorCode.OPERATION_NOT_FOUND: 404,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.OFFER_NOT_ELIGIBLE: 409,
    ErrorCode.INSUFFICIENT_POINTS: 409,
    ErrorCode.CODE_ALREADY_REDEEMED: 409,
    ErrorCode.CODE_VOIDED: 409,
    ErrorCode.CODE_EXPIRED: 409,
    ErrorCode.MEMBER_MERGED: 409,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 503,
    ErrorCode.DRAINING: 503,
}

_ID = __import__("re").compile(ID_PATTERN)


async def _body(request: web.Request, typ: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(str(exc)) from None


class BadRequest(Exception):
    """A request body that does not validate (answered 400)."""


class NoSuchMerchant(Exception):
    """The merchant in the path does not exist: answered as one outside the token's reach
    (404 ``not_found``), whoever asks."""


def auth_middleware(admin_token: str, merchant_keys: MerchantKeys) -> Any:
    """Checks the bearer token of every ``/admin/v1/`` route against the operator's admin
    token and the merchants' own, and answers refusals with their status and stable code."""

    @web.middleware
    async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/admin/v1/"):
            return await handler(request)
        reach = admin_reach(request.headers.get("Authorization", ""), admin_token, merchant_keys)
        if reach is None:
            return _error(401, "unauthorized", "a valid admin bearer token is required")
        request[REACH] = reach  # who asked, for the routes that record it (adjustments)
        resp = await _authorized(request, handler, reach)
        if request.method != "GET":  # every write, refused or not, with who asked
            audit_write(request, reach, resp.status)
        return resp

    return admin_auth


async def _authorized(request: web.Request, handler: Handler, reach: str) -> web.StreamResponse:
    merchant = request.match_info.get("merchant", "")
    if merchant and (not _ID.match(merchant) or reach not in (ANY_MERCHANT, merchant)):
        return _error(404, "not_found", "no such merchant")
    for name, value in request.match_info.items():
        if not _ID.match(value):  # no id holds anything else (a NUL reached the database)
            return _error(404, "not_found", f"no such {name}")
    try:
        return await handler(request)
    except GatewayError as exc:
        return _error(_STATUS.get(exc.code, 500), exc.code.value, exc.message)
    except BadRequest as exc:
        return _error(400, "invalid_field", str(exc))
    except NoSuchMerchant:
        return _error(404, "not_found", "no such merchant")


def audit_write(request: web.Request, reach: str, status: int, merchant: str | None = None) -> None:
    """One ``gateway.audit`` line for an admin write (``gateway.logs``): who (the token's
    reach), what (the method and the route's template), on which merchant and member."""
    actor = "operator" if reach == ANY_MERCHANT else f"merchant:{reach}"
    info = request.match_info
    route = info.route.resource.canonical if info.route.resource is not None else request.path
    member = info.get("member")
    logs.audit(actor, f"{request.method} {route}", merchant or info.get("merchant"), member, status)


ROUTES: list[tuple[str, str, str]] = [
    ("PUT", "", "put_programme"),
    ("GET", "", "get_programme"),
    ("GET", "/rules", "list_rules"),
    ("PUT", "/rules/{rule}", "put_rule"),
    ("DELETE", "/rules/{rule}", "delete_rule"),
    ("GET", "/tiers", "list_tiers"),
    ("PUT", "/tiers", "put_tiers"),
    ("POST", "/tiers/evaluate", "evaluate_tiers"),
    ("GET", "/rewards", "list_rewards"),
    ("PUT", "/rewards/{reward}", "put_reward"),
    ("DELETE", "/rewards/{reward}", "delete_reward"),
    ("POST", "/codes/{code}/void", "void_code"),
    ("POST", "/members", "enrol_member"),
    ("GET", "/members", "lookup_member"),
    ("GET", "/members/{member}", "get_member"),
    ("DELETE", "/members/{member}", "erase_member"),
    ("GET", "/members/{member}/history", "member_history"),
    ("GET", "/members/{member}/export", "export_member"),
    ("POST", "/members/{member}/merge", "merge_member"),
    ("POST", "/expiry/run", "run_expiry"),
]
"""Every route: method, path under ``PREFIX``, and the ``AdminApi`` method that serves it."""


@dataclass(frozen=True, slots=True)
class AdminServices:
    """The domain services the admin API calls."""

    config: ProgrammeConfig
    members: Members
    sales: Sales
    tiers: Tiers
    rewards: Rewards
    merger: Merger
    privacy: Privacy
    expiry: PointsExpiry
    birthdays: Birthdays
    catalogue: Catalogue
    reorder: Reorder
    adjustments: Adjustments
    webhooks: Webhooks
    segments: Segments
    offers: Offers


class AdminApi:
    def __init__(
        self, services: AdminServices, admin_token: str, merchant_keys: MerchantKeys
    ) -> None:
        self.s = services
        self._admin_token = admin_token
        self._merchant_keys = merchant_keys
        #: Route modules of their own, mounted under the same prefix and authentication.
        self.birthday = BirthdayApi(services.birthdays, self._merchant)
        self.catalogue = CatalogueApi(services.catalogue, self._merchant)
        self.reorder = ReorderApi(services.reorder, self._merchant)
        self.adjustments = AdjustmentApi(services.adjustments, self._merchant)
        self.webhook = WebhookApi(services.webhooks, self._merchant)
        self.segments = SegmentApi(services.segments, self._merchant)
        self.offers = OfferApi(services.offers, self._merchant)

    def setup(self, app: web.Application) -> None:
        """Mount the admin API on ``app``."""
        app.middlewares.append(auth_middleware(self._admin_token, self._merchant_keys))
        for method, path, name in ROUTES:
            app.router.add_route(method, PREFIX + path, getattr(self, name))
        self.birthday.setup(app, PREFIX)
        self.catalogue.setup(app, PREFIX)
        self.reorder.setup(app, PREFIX)
        self.adjustments.setup(app, PREFIX)
        self.webhook.setup(app, PREFIX)
        self.segments.setup(app, PREFIX)
        self.offers.setup(app, PREFIX)
        app.router.add_get("/admin/v1/openapi.json", openapi)

    async def _merchant(self, request: web.Request) -> str:
        """The merchant in the path, which must exist (else 404)."""
        merchant = request.match_info["merchant"]
        if not await self.s.config.exists(merchant):
            raise NoSuchMerchant
        return merchant

    # ------------------------------------------------------------------ programme
    async def put_programme(self, request: web.Request) -> web.Response:
        merchant = request.match_info["merchant"]
        body: ProgrammeIn = await _body(request, ProgrammeIn)
        # Fields present in the body (so ``null`` clears a nullable setting such as the cap).
        present = set(json.loads(await request.read() or b"{}"))
        fields = msgspec.structs.asdict(body)
        view = await self.s.config.update(
            merchant,
            name=body.name,
            currency=body.currency,
            points_per_unit=None if body.points_per_unit is None else Decimal(body.points_per_unit),
            settings={k: v for k, v in fields.items() if k in present},
        )
        return _json(view)

    async def get_programme(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        return _json(await self.s.config.view(merchant))

    async def list_rules(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        return _json({"rules": await self.s.config.rules(merchant)})

    async def put_rule(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        rule = request.match_info["rule"]
        if not _ID.match(rule):
            return _error(400, "invalid_field", "rule id")
        b: RuleIn = await _body(request, RuleIn)
        spec = Rule(
            id=rule,
            kind=b.kind,
            name=b.name,
            sku=b.sku,
            category=b.category,
            multiplier=Decimal(b.multiplier),
            bonus=b.bonus,
            min_total=b.min_total,
            tier=b.tier,
            starts_at=b.starts_at,
            ends_at=b.ends_at,
        )
        return _json(await self.s.config.put_rule(merchant, spec))

    async def delete_rule(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        rule = request.match_info["rule"]
        if not await self.s.config.delete_rule(merchant, rule):
            return _error(404, "not_found", "no such rule")
        return _json({"deleted": rule})

    async def list_tiers(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        return _json({"tiers": await self.s.config.tiers(merchant)})

    async def put_tiers(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b: TiersIn = await _body(request, TiersIn)
        tiers = [Tier(t.id, t.name, t.threshold, Decimal(t.multiplier)) for t in b.tiers]
        return _json({"tiers": await self.s.config.replace_tiers(merchant, tiers)})

    async def evaluate_tiers(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b: EvaluateIn = await _body(request, EvaluateIn)
        self.s.config.reload(merchant)
        if b.at is not None and b.at > datetime.now(UTC) + EXPIRY_SKEW:
            # tiers evaluated as of a later day would drop members before their window ends
            return _error(400, "invalid_field", "at may not be in the future")
        return _json(await self.s.tiers.evaluate(merchant, b.at))

    async def list_rewards(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        return _json({"rewards": await self.s.config.rewards(merchant)})

    async def put_reward(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        reward = request.match_info["reward"]
        if not _ID.match(reward):
            return _error(400, "invalid_field", "reward id")
        b: RewardIn = await _body(request, RewardIn)
        spec = Reward(
            reward, b.name, b.cost, b.kind, b.value, b.sku, b.min_tier, b.valid_days, b.active
        )
        return _json(await self.s.config.put_reward(merchant, spec))

    async def delete_reward(self, request: web.Request) -> web.Response:
        """Withdraw a reward from the catalogue (codes already issued stay valid)."""
        merchant = await self._merchant(request)
        reward = request.match_info["reward"]
        if not await self.s.config.withdraw_reward(merchant, reward):
            return _error(404, "reward_not_found", "no such reward")
        return _json({"withdrawn": reward})

    async def void_code(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b: VoidIn = await _body(request, VoidIn)
        code = await self.s.rewards.void(
            Origin(merchant=merchant, channel="admin"), request.match_info["code"], b.op
        )
        return _json(msgspec.to_builtins(code))

    # ------------------------------------------------------------------ members
    async def enrol_member(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b: EnrolIn = await _body(request, EnrolIn)
        m = await self.s.members.enrol(
            merchant, phone=b.phone, email=b.email, card=b.card, name=b.name, channel="admin"
        )
        return _json(msgspec.to_builtins(m), 201 if m.created else 200)

    async def lookup_member(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        q = request.query
        m = await self.s.members.lookup(
            merchant, phone=q.get("phone"), email=q.get("email"), card=q.get("card")
        )
        return _json(msgspec.to_builtins(m))

    async def get_member(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        m = await self.s.members.member(merchant, request.match_info["member"])
        return _json(msgspec.to_builtins(m))

    async def member_history(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        member = request.match_info["member"]
        await self.s.members.member(merchant, member)  # 404 unless the merchant's
        before = request.query.get("before")
        try:
            limit = int(request.query.get("limit", "20"))
            if before is not None and not 0 <= int(before) < 2**63:
                raise ValueError(before)
        except ValueError:
            return _error(400, "invalid_field", "limit and before are integers (before: a cursor)")
        if not 1 <= limit <= 100:
            return _error(400, "invalid_field", "limit must be within [1, 100]")
        page = await self.s.sales.history(merchant, member, before, limit)
        return _json(msgspec.to_builtins(page))

    async def export_member(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        return _json(await self.s.privacy.export(merchant, request.match_info["member"]))

    async def erase_member(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        erased = await self.s.privacy.erase(merchant, request.match_info["member"])
        if erased is None:
            return _error(404, "member_not_found", "no such member")
        return _json({"member": erased, "erased": True})  # a merged id names its survivor

    async def merge_member(self, request: web.Request) -> web.Response:
        """Merge the duplicate ``source`` into the member in the path (see gateway/members)."""
        merchant = await self._merchant(request)
        b: MergeIn = await _body(request, MergeIn)
        result = await self.s.merger.merge(
            Origin(merchant=merchant, channel="admin"), request.match_info["member"], b.source, b.op
        )
        return _json(msgspec.to_builtins(result))

    async def run_expiry(self, request: web.Request) -> web.Response:
        merchant = await self._merchant(request)
        b: ExpiryIn = await _body(request, ExpiryIn)
        if b.now is not None and b.now > datetime.now(UTC) + EXPIRY_SKEW:
            # an instant ahead of the clock would expire points before their time
            return _error(400, "invalid_field", "now may not be in the future")
        return _json({"expired": await self.s.expiry.run(b.now, merchant)})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/json")
