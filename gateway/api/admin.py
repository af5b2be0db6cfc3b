"""Admin HTTP API: a merchant's programme (currency, rate, rounding, rules, tiers, rewards) and
its members (enrol, look up, history, export, erase), plus the tier evaluation and points
expiry jobs.

Every route is under ``/admin/v1/merchants/{merchant}`` and needs ``Authorization: Bearer
<GATEWAY_ADMIN_TOKEN>`` (the operator's: every merchant) or one of that merchant's admin
tokens (``gateway/merchant_keys.py``); a merchant's token naming another merchant is answered
as an unknown merchant (404). Every query is scoped by the merchant in the path: another merchant's
member, rule, reward or code answers 404 exactly like one that does not exist.

``setup_api(app, node)`` mounts the routes; they serve the loyalty service the node builds
when it starts (``Node.loyalty``: websocket commands, member events, the points-expiry job)
and answer 503 before that.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

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
from gateway.errors import GatewayError
from gateway.loyalty.directory import create_merchant
from gateway.loyalty.programme import plain
from gateway.loyalty.service import Loyalty
from gateway.merchant_keys import ANY_MERCHANT, MerchantKeys, admin_reach
from gateway.store.db import translate_errors
from protocol.codes import ErrorCode
from protocol.limits import ID_PATTERN

if TYPE_CHECKING:
    from gateway.app import Node

PREFIX = "/admin/v1/merchants/{merchant}"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
#: How far ahead of this node's clock an expiry run's ``now`` or a tier evaluation's ``at``
#: may be (clock skew) before it is refused; within it, the instant is read as the database's
#: clock, so nothing expires and no tier drops early.
EXPIRY_SKEW = timedelta(seconds=60)
#: The node whose loyalty service the API serves (``Node.loyalty`` is built in ``start``).
SERVICE: web.AppKey[Node] = web.AppKey("node")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS = {
    ErrorCode.INVALID_FIELD: 400,
    ErrorCode.IDENTITY_INVALID: 400,
    ErrorCode.FORBIDDEN: 404,
    ErrorCode.MEMBER_NOT_FOUND: 404,
    ErrorCode.REWARD_NOT_FOUND: 404,
    ErrorCode.CODE_NOT_FOUND: 404,
    ErrorCode.SALE_NOT_FOUND: 404,
    ErrorCode.OPERATION_NOT_FOUND: 404,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
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


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": code, "message": message}, status)


async def _body(request: web.Request, typ: type[Any]) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(str(exc)) from None


class BadRequest(Exception):
    """A request body that does not validate (answered 400)."""


def _svc(request: web.Request) -> Loyalty:
    svc = request.app[SERVICE].loyalty
    if svc is None:
        raise web.HTTPServiceUnavailable()
    return svc


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/admin/v1/"):
        return await handler(request)
    reach = admin_reach(
        request.headers.get("Authorization", ""), request.app[TOKEN], request.app[KEYS]
    )
    if reach is None:
        return _error(401, "unauthorized", "a valid admin bearer token is required")
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


TOKEN: web.AppKey[str] = web.AppKey("admin_token", str)
KEYS: web.AppKey[MerchantKeys] = web.AppKey("merchant_keys", MerchantKeys)


async def _merchant_exists(request: web.Request) -> str:
    merchant = request.match_info["merchant"]
    svc = _svc(request)
    with translate_errors("merchant read"):
        found = await svc.pool.fetchval("SELECT 1 FROM merchants WHERE id = $1", merchant)
    if not found:
        raise GatewayError("no such merchant", ErrorCode.FORBIDDEN)
    return merchant


# --------------------------------------------------------------------------- programme


async def programme_view(svc: Loyalty, merchant: str) -> dict[str, Any]:
    svc.programmes.invalidate(merchant)
    p = await svc.programmes.get(merchant)
    with translate_errors("merchant read"):
        name = await svc.pool.fetchval("SELECT name FROM merchants WHERE id = $1", merchant)
    return {
        "merchant": merchant,
        "name": name,
        "currency": p.currency,
        "points_per_unit": plain(p.points_per_unit),
        "region": p.region,
        "rounding": p.rounding,
        "max_points_per_sale": p.max_points_per_sale,
        "tier_window_days": p.tier_window_days,
        "expiry_days": p.expiry_days,
        "code_valid_days": p.code_valid_days,
    }


async def put_programme(request: web.Request) -> web.Response:
    merchant = request.match_info["merchant"]
    body: ProgrammeIn = await _body(request, ProgrammeIn)
    # Fields present in the body (so ``null`` clears a nullable setting such as the cap).
    present = set(json.loads(await request.read() or b"{}"))
    svc = _svc(request)
    fields = msgspec.structs.asdict(body)
    with translate_errors("programme write"):
        async with svc.pool.acquire() as conn, conn.transaction():
            await create_merchant(conn, merchant, body.name or merchant)
            await conn.execute(
                """UPDATE merchants SET name = COALESCE($2, name),
                          currency = COALESCE($3, currency),
                          points_per_unit = COALESCE($4::numeric, points_per_unit)
                    WHERE id = $1""",
                merchant,
                body.name,
                body.currency,
                None if body.points_per_unit is None else Decimal(body.points_per_unit),
            )
            await conn.execute(
                "INSERT INTO programmes (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING",
                merchant,
            )
            for column in (
                "region",
                "rounding",
                "max_points_per_sale",
                "tier_window_days",
                "expiry_days",
                "code_valid_days",
            ):
                if column in present:
                    if fields[column] is None and column not in _NULLABLE:
                        raise BadRequest(f"{column} may not be null")
                    await conn.execute(
                        f"UPDATE programmes SET {column} = $2, updated_at = now() "
                        "WHERE merchant_id = $1",
                        merchant,
                        fields[column],
                    )
    return _json(await programme_view(svc, merchant))


#: Programme settings a ``null`` clears (the others always hold a value).
_NULLABLE = frozenset({"max_points_per_sale", "expiry_days"})


async def get_programme(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    return _json(await programme_view(_svc(request), merchant))


# --------------------------------------------------------------------------- rules


def _rule_out(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "kind": r["kind"],
        "name": r["name"],
        "sku": r["sku"],
        "category": r["category"],
        "multiplier": plain(Decimal(r["multiplier"])),
        "bonus": r["bonus"],
        "min_total": r["min_total"],
        "tier": r["tier"],
        "starts_at": r["starts_at"].isoformat() if r["starts_at"] else None,
        "ends_at": r["ends_at"].isoformat() if r["ends_at"] else None,
    }


_RULE_COLUMNS = (
    "id, kind, name, sku, category, multiplier, bonus, min_total, tier, starts_at, ends_at"
)


async def list_rules(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    with translate_errors("rules read"):
        rows = await _svc(request).pool.fetch(
            f"SELECT {_RULE_COLUMNS} FROM earning_rules WHERE merchant_id = $1 ORDER BY id",
            merchant,
        )
    return _json({"rules": [_rule_out(r) for r in rows]})


async def put_rule(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    rule = request.match_info["rule"]
    if not _ID.match(rule):
        return _error(400, "invalid_field", "rule id")
    b: RuleIn = await _body(request, RuleIn)
    if b.kind == "product" and b.sku is None:
        return _error(400, "invalid_field", "a product rule needs sku")
    if b.kind == "category" and b.category is None:
        return _error(400, "invalid_field", "a category rule needs category")
    svc = _svc(request)
    with translate_errors("rule write"):
        row = await svc.pool.fetchrow(
            f"""INSERT INTO earning_rules (merchant_id, {_RULE_COLUMNS})
               VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8, $9, $10, $11, $12)
               ON CONFLICT (merchant_id, id) DO UPDATE SET
                 kind = EXCLUDED.kind, name = EXCLUDED.name, sku = EXCLUDED.sku,
                 category = EXCLUDED.category, multiplier = EXCLUDED.multiplier,
                 bonus = EXCLUDED.bonus, min_total = EXCLUDED.min_total, tier = EXCLUDED.tier,
                 starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at
               RETURNING {_RULE_COLUMNS}""",
            merchant,
            rule,
            b.kind,
            b.name,
            b.sku,
            b.category,
            Decimal(b.multiplier),
            b.bonus,
            b.min_total,
            b.tier,
            b.starts_at,
            b.ends_at,
        )
    svc.programmes.invalidate(merchant)
    return _json(_rule_out(row))


async def delete_rule(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    svc = _svc(request)
    with translate_errors("rule delete"):
        n = await svc.pool.fetchval(
            "DELETE FROM earning_rules WHERE merchant_id = $1 AND id = $2 RETURNING 1",
            merchant,
            request.match_info["rule"],
        )
    svc.programmes.invalidate(merchant)
    if not n:
        return _error(404, "not_found", "no such rule")
    return _json({"deleted": request.match_info["rule"]})


# --------------------------------------------------------------------------- tiers


async def _tiers(svc: Loyalty, merchant: str) -> dict[str, Any]:
    with translate_errors("tiers read"):
        rows = await svc.pool.fetch(
            "SELECT id, name, threshold, multiplier FROM tiers WHERE merchant_id = $1 ORDER BY threshold",
            merchant,
        )
    return {
        "tiers": [
            {
                "id": r["id"],
                "name": r["name"],
                "threshold": r["threshold"],
                "multiplier": plain(Decimal(r["multiplier"])),
            }
            for r in rows
        ]
    }


async def list_tiers(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    return _json(await _tiers(_svc(request), merchant))


async def put_tiers(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    b: TiersIn = await _body(request, TiersIn)
    if len({t.id for t in b.tiers}) != len(b.tiers) or len({t.threshold for t in b.tiers}) != len(
        b.tiers
    ):
        return _error(400, "invalid_field", "tier ids and thresholds must be unique")
    svc = _svc(request)
    with translate_errors("tiers write"):
        async with svc.pool.acquire() as conn, conn.transaction():
            # One writer of a merchant's tiers at a time: two at once (a retry after a
            # timeout) each deleted only the rows their snapshot saw, and the second's
            # inserts hit the first's rows (a 500).
            await conn.execute("SELECT 1 FROM merchants WHERE id = $1 FOR UPDATE", merchant)
            await conn.execute("DELETE FROM tiers WHERE merchant_id = $1", merchant)
            await conn.executemany(
                """INSERT INTO tiers (merchant_id, id, name, threshold, multiplier)
                   VALUES ($1, $2, $3, $4, $5::numeric)""",
                [(merchant, t.id, t.name, t.threshold, Decimal(t.multiplier)) for t in b.tiers],
            )
    svc.programmes.invalidate(merchant)
    return _json(await _tiers(svc, merchant))


async def evaluate_tiers(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    b: EvaluateIn = await _body(request, EvaluateIn)
    svc = _svc(request)
    svc.programmes.invalidate(merchant)
    if b.at is not None and b.at > datetime.now(UTC) + EXPIRY_SKEW:
        # tiers evaluated as of a later day would drop members before their window ends
        return _error(400, "invalid_field", "at may not be in the future")
    return _json(await svc.evaluate_tiers(merchant, b.at))


# --------------------------------------------------------------------------- rewards


def _reward_out(r: Any) -> dict[str, Any]:
    return {
        k: r[k]
        for k in ("id", "name", "cost", "kind", "value", "sku", "min_tier", "valid_days", "active")
    }


async def list_rewards(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    return _json({"rewards": [_reward_out(r) for r in await _svc(request).rewards(merchant)]})


async def put_reward(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    reward = request.match_info["reward"]
    if not _ID.match(reward):
        return _error(400, "invalid_field", "reward id")
    b: RewardIn = await _body(request, RewardIn)
    if b.kind == "free_item" and b.sku is None:
        return _error(400, "invalid_field", "a free_item reward needs sku")
    with translate_errors("reward write"):
        row = await _svc(request).pool.fetchrow(
            """INSERT INTO rewards (merchant_id, id, name, cost, kind, value, sku, min_tier,
                                    valid_days, active)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (merchant_id, id) DO UPDATE SET
                 name = EXCLUDED.name, cost = EXCLUDED.cost, kind = EXCLUDED.kind,
                 value = EXCLUDED.value, sku = EXCLUDED.sku, min_tier = EXCLUDED.min_tier,
                 valid_days = EXCLUDED.valid_days, active = EXCLUDED.active
               RETURNING id, name, cost, kind, value, sku, min_tier, valid_days, active""",
            merchant,
            reward,
            b.name,
            b.cost,
            b.kind,
            b.value,
            b.sku,
            b.min_tier,
            b.valid_days,
            b.active,
        )
    return _json(_reward_out(row))


async def delete_reward(request: web.Request) -> web.Response:
    """Withdraw a reward from the catalogue (codes already issued stay valid)."""
    merchant = await _merchant_exists(request)
    with translate_errors("reward write"):
        n = await _svc(request).pool.fetchval(
            "UPDATE rewards SET active = false WHERE merchant_id = $1 AND id = $2 RETURNING 1",
            merchant,
            request.match_info["reward"],
        )
    if not n:
        return _error(404, "reward_not_found", "no such reward")
    return _json({"withdrawn": request.match_info["reward"]})


async def void_code(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    b: VoidIn = await _body(request, VoidIn)
    from gateway.ledger.model import Origin

    code = await _svc(request).void_code(
        Origin(merchant=merchant, channel="admin"), request.match_info["code"], b.op
    )
    return _json(msgspec.to_builtins(code))


# --------------------------------------------------------------------------- members


async def enrol_member(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    b: EnrolIn = await _body(request, EnrolIn)
    m = await _svc(request).enrol(
        merchant, phone=b.phone, email=b.email, card=b.card, name=b.name, channel="admin"
    )
    return _json(msgspec.to_builtins(m), 201 if m.created else 200)


async def lookup_member(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    q = request.query
    m = await _svc(request).lookup(
        merchant, phone=q.get("phone"), email=q.get("email"), card=q.get("card")
    )
    return _json(msgspec.to_builtins(m))


async def get_member(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    m = await _svc(request).member(merchant, request.match_info["member"])
    return _json(msgspec.to_builtins(m))


async def member_history(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    svc = _svc(request)
    member = request.match_info["member"]
    await svc.member(merchant, member)  # 404 unless the merchant's
    before = request.query.get("before")
    try:
        limit = int(request.query.get("limit", "20"))
        if before is not None and not 0 <= int(before) < 2**63:
            raise ValueError(before)
    except ValueError:
        return _error(400, "invalid_field", "limit and before are integers (before: a cursor)")
    if not 1 <= limit <= 100:
        return _error(400, "invalid_field", "limit must be within [1, 100]")
    page = await svc.history(merchant, member, before, limit)
    return _json(msgspec.to_builtins(page))


async def export_member(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    return _json(await _svc(request).export(merchant, request.match_info["member"]))


async def erase_member(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    member = request.match_info["member"]
    erased = await _svc(request).erase(merchant, member)
    if erased is None:
        return _error(404, "member_not_found", "no such member")
    return _json({"member": erased, "erased": True})  # a merged id names its survivor


async def merge_member(request: web.Request) -> web.Response:
    """Merge the duplicate ``source`` into the member in the path (see gateway/loyalty)."""
    merchant = await _merchant_exists(request)
    b: MergeIn = await _body(request, MergeIn)
    from gateway.ledger.model import Origin

    result = await _svc(request).merge(
        Origin(merchant=merchant, channel="admin"), request.match_info["member"], b.source, b.op
    )
    return _json(msgspec.to_builtins(result))


async def run_expiry(request: web.Request) -> web.Response:
    merchant = await _merchant_exists(request)
    b: ExpiryIn = await _body(request, ExpiryIn)
    if b.now is not None and b.now > datetime.now(UTC) + EXPIRY_SKEW:
        # an instant ahead of the clock would expire points before their time
        return _error(400, "invalid_field", "now may not be in the future")
    return _json({"expired": await _svc(request).run_expiry(b.now, merchant)})


ROUTES: list[tuple[str, str, Handler]] = [
    ("PUT", "", put_programme),
    ("GET", "", get_programme),
    ("GET", "/rules", list_rules),
    ("PUT", "/rules/{rule}", put_rule),
    ("DELETE", "/rules/{rule}", delete_rule),
    ("GET", "/tiers", list_tiers),
    ("PUT", "/tiers", put_tiers),
    ("POST", "/tiers/evaluate", evaluate_tiers),
    ("GET", "/rewards", list_rewards),
    ("PUT", "/rewards/{reward}", put_reward),
    ("DELETE", "/rewards/{reward}", delete_reward),
    ("POST", "/codes/{code}/void", void_code),
    ("POST", "/members", enrol_member),
    ("GET", "/members", lookup_member),
    ("GET", "/members/{member}", get_member),
    ("DELETE", "/members/{member}", erase_member),
    ("GET", "/members/{member}/history", member_history),
    ("GET", "/members/{member}/export", export_member),
    ("POST", "/members/{member}/merge", merge_member),
    ("POST", "/expiry/run", run_expiry),
]


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/json")


def setup_api(app: web.Application, node: Node) -> None:
    """Mount the admin API on ``app``; it serves ``node``'s loyalty service, which the node
    builds when it starts."""
    app[SERVICE] = node
    app[TOKEN] = node.settings.auth.admin_token
    app[KEYS] = node.settings.auth.merchant_keys
    app.middlewares.append(admin_auth)
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_get("/admin/v1/openapi.json", openapi)
