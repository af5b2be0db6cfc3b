"""Build the OpenAPI 3.1 description of every HTTP route a node serves: the admin API, the
broadcast, this document, the operator's endpoints and the websocket's upgrade.

Request and response schemas are msgspec's JSON Schema of the types the handlers decode and
answer (``bodies.py``, ``responses.py``, the protocol's frames); each route lists the refusals
it can answer, by status, with their stable ``error`` codes. The HTML pages and their static
files (``gateway.web``) are not an API and are left out.

``python -m gateway.api.openapi > gateway/api/openapi.json`` regenerates the checked-in file;
a test fails when it is stale, when the node serves a route it does not describe, and when a
test node answers a status, a code or a body it does not document (``tests/contract.py``).
"""

# long module: every route's entry (its summary, body, answer and refusals), one per route

from __future__ import annotations

import json
import re
import sys
from typing import Any

import msgspec

from gateway.api import (
    adjustments,
    admin,
    birthdays,
    bodies,
    broadcast,
    catalogue,
    offers,
    reorder,
    reorder_links,
    segments,
    webhooks,
)
from gateway.api import responses as out
from gateway.api.routedoc import INVALID, NOT_FOUND, Route
from protocol.limits import ID_PATTERN

_SCHEMAS = "#/components/schemas/{name}"


_MEMBER_404 = (NOT_FOUND, "member_not_found")
_LEDGER_503 = ("unavailable", "timeout")
_STRING = {"type": "string"}

#: Every admin route, by method and path under ``admin.PREFIX``. Each also answers 401
#: ``unauthorized`` (no valid admin token), 404 ``not_found`` (a merchant that does not exist
#: or that the token does not reach, a path id outside ``ID_PATTERN``) and 503
#: ``unavailable`` (a store did not answer), listed with its own below.
ADMIN: dict[tuple[str, str], Route] = {
    ("PUT", ""): Route(
        "Create or update the merchant's programme (a field left out keeps its value; null "
        "clears a nullable one)",
        bodies.ProgrammeIn,
        out.Programme,
        {400: (INVALID,)},
    ),
    ("GET", ""): Route("Read the merchant's programme", None, out.Programme),
    ("GET", "/rules"): Route("List earning rules", None, out.Rules),
    ("PUT", "/rules/{rule}"): Route(
        "Create or replace an earning rule", bodies.RuleIn, out.Rule, {400: (INVALID,)}
    ),
    ("DELETE", "/rules/{rule}"): Route("Delete an earning rule", None, out.RuleDeleted),
    ("GET", "/tiers"): Route("List tiers", None, out.Tiers),
    ("PUT", "/tiers"): Route(
        "Replace the tier ladder", bodies.TiersIn, out.Tiers, {400: (INVALID,)}, body_required=True
    ),
    ("POST", "/tiers/evaluate"): Route(
        "Evaluation date: give every member the tier its window earns (downgrades too); 400 "
        "invalid_field for an `at` ahead of the clock",
        bodies.EvaluateIn,
        out.Evaluated,
        {400: (INVALID,)},
    ),
    ("GET", "/rewards"): Route("List the reward catalogue", None, out.Rewards),
    ("PUT", "/rewards/{reward}"): Route(
        "Create or replace a reward", bodies.RewardIn, out.Reward, {400: (INVALID,)}
    ),
    ("DELETE", "/rewards/{reward}"): Route(
        "Withdraw a reward (issued codes stay valid)",
        None,
        out.Withdrawn,
        {404: (NOT_FOUND, "reward_not_found")},
    ),
    ("POST", "/codes/{code}/void"): Route(
        "Void an unredeemed code; its points go back",
        bodies.VoidIn,
        out.RewardCode,
        {
            400: (INVALID,),
            404: (NOT_FOUND, "code_not_found", "member_not_found"),
            409: ("code_already_redeemed", "code_voided", "idempotency_conflict", "member_merged"),
            503: _LEDGER_503,
        },
        body_required=True,
    ),
    ("POST", "/members"): Route(
        "Enrol (find or create) a member by phone and/or email: 201 when created, 200 when the "
        "identity was enrolled already",
        bodies.EnrolIn,
        out.Member,
        {400: (INVALID, "identity_invalid")},
        ok=(200, 201),
    ),
    ("GET", "/members"): Route(
        "Look a member up by phone, email or card (exactly one query parameter)",
        None,
        out.Member,
        {400: (INVALID, "identity_invalid"), 404: _MEMBER_404},
        query=(("phone", _STRING), ("email", _STRING), ("card", _STRING)),
    ),
    ("GET", "/members/{member}"): Route(
        "Read a member's profile and balance (a merged duplicate's id answers its survivor)",
        None,
        out.Member,
        {404: _MEMBER_404},
    ),
    ("DELETE", "/members/{member}"): Route(
        "Erase a member's personal data (GDPR), and that of the duplicates merged into it; a "
        "merged duplicate's id erases its survivor, which the reply names; ledger amounts "
        "stay, anonymised",
        None,
        out.Erased,
        {404: _MEMBER_404},
    ),
    ("GET", "/members/{member}/history"): Route(
        "Purchase history, newest first, keyset pages (`before` = the previous page's `next`)",
        None,
        out.History,
        {400: (INVALID,), 404: _MEMBER_404},
        query=(
            ("before", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
        ),
    ),
    ("GET", "/members/{member}/export"): Route(
        "Export everything held about a member (GDPR)", None, out.Export, {404: _MEMBER_404}
    ),
    ("POST", "/members/{member}/merge"): Route(
        "Merge the duplicate member `source` into this one (balance, holds, identities, "
        "history, codes, tier); idempotent per `op`; 409 member_merged if either side was "
        "merged already",
        bodies.MergeIn,
        out.MergeResult,
        {
            400: (INVALID,),
            404: _MEMBER_404,
            409: ("member_merged", "idempotency_conflict"),
            503: _LEDGER_503,
        },
        body_required=True,
    ),
    ("POST", "/expiry/run"): Route(
        "Run the points-expiry job for this merchant now (optionally as of a past `now`; "
        "400 invalid_field for a `now` ahead of the clock)",
        bodies.ExpiryIn,
        out.Expired,
        {400: (INVALID,), 503: _LEDGER_503},
    ),
    ("GET", "/birthday"): Route(
        "Read the merchant's birthday rule (404 not_found when there is none)",
        None,
        birthdays.BirthdayRuleOut,
    ),
    ("PUT", "/birthday"): Route(
        "Create or replace the birthday rule: points, or a reward of the catalogue granted as "
        "a code that costs no points; on the day or the first day of the birth month; in the "
        "member's time zone or the programme's. Granted once per member and year by a job on "
        "every node (docs/loyalty.md, Birthday rewards)",
        birthdays.BirthdayRuleIn,
        birthdays.BirthdayRuleOut,
        {400: (INVALID, "time_zone_unknown"), 404: (NOT_FOUND, "reward_not_found")},
        body_required=True,
    ),
    ("DELETE", "/birthday"): Route(
        "Stop granting birthday rewards (grants made stay; 404 not_found when there is no rule)",
        None,
        birthdays.BirthdayRuleDeleted,
    ),
    **catalogue.DOCS,
    **reorder.DOCS,
    **adjustments.DOCS,
    ("GET", "/offers"): Route("List the merchant's targeted offers", None, offers.OfferList),
    ("GET", "/offers/{offer}"): Route(
        "Read a targeted offer (404 not_found when there is none)", None, offers.OfferOut
    ),
    ("PUT", "/offers/{offer}"): Route(
        "Create or replace a targeted offer: bonus points on a SKU or a category, a fixed "
        "bonus, or a multiplier; for segments and/or listed members; within a window, on "
        "channels, with per-member and total limits (docs/loyalty.md, Targeted offers). A "
        "window that ends before it starts or is past, an unknown segment, points or a "
        "multiplier out of bounds: 400 invalid_field, nothing changed",
        offers.OfferIn,
        offers.OfferOut,
        {400: (INVALID,), 404: (NOT_FOUND, "member_not_found")},
        body_required=True,
    ),
    ("DELETE", "/offers/{offer}"): Route(
        "Withdraw an offer: it applies to no later sale; its uses stay counted (404 not_found "
        "when there is none)",
        None,
        offers.OfferDeleted,
    ),
    ("PUT", "/offers/{offer}/members"): Route(
        "Replace the members an offer lists (a member that is not the merchant's: 404 "
        "member_not_found, nothing changed)",
        offers.OfferMembersIn,
        offers.OfferOut,
        {400: (INVALID,), 404: (NOT_FOUND, "member_not_found")},
        body_required=True,
    ),
    ("POST", "/webhooks"): Route(
        "Add a webhook endpoint: its URL (http or https; a host that is or resolves to a "
        "loopback, private, link-local or unique-local address is refused unless the node sets "
        "GATEWAY_WEBHOOKS_ALLOW_PRIVATE=1) and the event types it is sent. Answers its signing "
        "secret, shown this once (docs/webhooks.md)",
        webhooks.WebhookIn,
        webhooks.WebhookCreated,
        {400: (INVALID,)},
        ok=(201,),
        body_required=True,
    ),
    ("GET", "/webhooks"): Route(
        "List the merchant's webhook endpoints", None, webhooks.WebhookList
    ),
    ("GET", "/webhooks/{webhook}"): Route("Read a webhook endpoint", None, webhooks.WebhookOut),
    ("PATCH", "/webhooks/{webhook}"): Route(
        "Change an endpoint's URL, event types or description (what is absent stays)",
        webhooks.WebhookPatch,
        webhooks.WebhookOut,
        {400: (INVALID,)},
        body_required=True,
    ),
    ("DELETE", "/webhooks/{webhook}"): Route(
        "Delete an endpoint and its deliveries (nothing more is sent to it)",
        None,
        webhooks.WebhookDeleted,
    ),
    ("POST", "/webhooks/{webhook}/rotate"): Route(
        "Rotate the endpoint's signing secret: answers the new one; the previous one keeps "
        "signing beside it (a second v1 in Loyalty-Signature) for `overlap_seconds`",
        webhooks.RotateIn,
        webhooks.Rotated,
        {400: (INVALID,)},
    ),
    ("GET", "/webhooks/{webhook}/deliveries"): Route(
        "The endpoint's deliveries, newest first, by state (`failed`: retried for the whole "
        "retry period and given up); paginated with `after`, the `next` of the previous page",
        None,
        webhooks.DeliveryPage,
        {400: (INVALID,)},
        query=(
            ("state", {"type": "string", "enum": ["pending", "delivered", "failed"]}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
            ("after", {"type": "integer", "minimum": 0}),
        ),
    ),
    ("POST", "/webhooks/{webhook}/deliveries/{delivery}/replay"): Route(
        "Send a failed (or delivered) delivery again, with the same event id: due at once, "
        "with a retry period anew (a pending one is answered as it is)",
        None,
        webhooks.DeliveryOut,
    ),
    ("POST", "/webhooks/{webhook}/replay"): Route(
        "Send every failed delivery of the endpoint again", None, webhooks.Replayed
    ),
    ("GET", "/segments"): Route(
        "Every segment of the merchant, with its definition and size",
        None,
        segments.SegmentList,
    ),
    ("POST", "/segments/recompute"): Route(
        "Recompute membership now, for every member, of every segment (or `segment`): the "
        "same evaluation as the live path; RFM quintiles afresh unless `rfm` is false",
        segments.RecomputeIn,
        segments.RecomputeOut,
        {400: (INVALID,)},
    ),
    ("PUT", "/segments/{segment}"): Route(
        "Create or replace a segment: a tree of typed conditions combined with all/any/not "
        "(docs/loyalty.md, Segments); validated whole (400 invalid_field and nothing stored), "
        "then recomputed for every member in the background",
        segments.SegmentIn,
        segments.SegmentOut,
        {400: (INVALID,)},
        body_required=True,
    ),
    ("GET", "/segments/{segment}"): Route(
        "Read a segment: its definition, size and when it was last computed",
        None,
        segments.SegmentOut,
    ),
    ("DELETE", "/segments/{segment}"): Route(
        "Delete a segment and its membership",
        None,
        segments.SegmentDeleted,
    ),
    ("GET", "/segments/{segment}/members"): Route(
        "The segment's members, by member id, a page at a time (`next` is the `after` of the "
        "next page)",
        None,
        segments.SegmentMembers,
        {400: (INVALID,)},
        query=(
            ("after", _STRING),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        ),
    ),
}

#: The routes outside ``admin.PREFIX``, by method and full path.
OTHERS: dict[tuple[str, str], Route] = {
    ("POST", "/admin/broadcast"): Route(
        "Send a `notice` to every live session of one merchant, on every node (the operator's "
        "admin token, or one of that merchant's)",
        broadcast.BroadcastRequest,
        out.Broadcast,
        {400: (INVALID,), 404: (NOT_FOUND,)},
        body_required=True,
    ),
    ("GET", "/admin/v1/openapi.json"): Route(
        "This document", None, {"type": "object"}, stores=False
    ),
}

_STATUS_TEXT = {
    400: "The request does not validate (a body field, a query parameter, a rule of the route)",
    408: "The body stopped coming",
    413: "The body is over the route's size limit",
    415: "The route takes no body of that Content-Type",
    401: "No valid admin bearer token",
    404: "Not found in this merchant (another merchant's data answers the same)",
    409: "Conflict with what is recorded (an op used for other content, a code's state, a "
    "merged member)",
    503: "A store did not answer, or the outcome is not known yet: retry the same request",
}


def _ref(cls: Any) -> dict[str, Any]:
    if isinstance(cls, dict):
        return cls
    return {"$ref": _SCHEMAS.format(name=cls.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _refusals(route: Route, merchant_route: bool) -> dict[str, Any]:
    """Every refusal of ``route``: its own, and those of every admin route (401, and 404 for a
    merchant the token does not reach, 503 for a store that did not answer)."""
    errors = route.errors
    base: dict[int, tuple[str, ...]] = {401: ("unauthorized",)}
    if route.stores:
        base[503] = ("unavailable",)
    if merchant_route:
        base[404] = (NOT_FOUND,)
    merged = {s: tuple(dict.fromkeys((*base.get(s, ()), *errors.get(s, ())))) for s in base}
    merged.update({s: c for s, c in errors.items() if s not in base})
    return {
        str(status): {
            "description": f"{_STATUS_TEXT[status]}: "
            + ", ".join(f"`{c}`" for c in merged[status]),
            "content": _json(
                {
                    "allOf": [_ref(out.ErrorBody)],
                    "properties": {"error": {"enum": list(merged[status])}},
                }
            ),
        }
        for status in sorted(merged)
    }


def _operation(method: str, path: str, route: Route, admin_route: bool) -> dict[str, Any]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN},
        }
        for name in re.findall(r"{(\w+)}", path)
    ] + [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in route.query
    ]
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": operation_id(method, path),
        "parameters": params,
        "security": [{"bearer": []}],
        "responses": {
            **{
                str(s): {
                    "description": "OK",
                    "content": {route.answer_media: {"schema": _ref(route.answer)}},
                }
                for s in route.ok
            },
            **_refusals(route, admin_route),
        },
    }
    if len(route.ok) > 1:
        op["responses"]["201"]["description"] = "Created"
    if route.media is not None:
        op["requestBody"] = {"required": True, "content": route.media}
    elif route.body is not None:
        op["requestBody"] = {
            "required": method == "PUT" or route.body_required,
            "content": _json(_ref(route.body)),
        }
    return op


def operation_id(method: str, path: str) -> str:
    suffix = path.removeprefix(admin.PREFIX)
    if path.startswith(admin.PREFIX):
        return f"{method.lower()}{re.sub(r'[^A-Za-z]+', '_', suffix) or '_programme'}"
    return f"{method.lower()}{re.sub(r'[^A-Za-z]+', '_', path).rstrip('_')}"


def _ops_paths() -> dict[str, Any]:
    """The operator's endpoints and the websocket's upgrade: no token."""
    plain: dict[str, Any] = {"security": [], "parameters": []}
    return {
        "/healthz": {
            "get": {
                **plain,
                "summary": "The process answers (liveness): its node name and session count",
                "operationId": "get_healthz",
                "responses": {"200": {"description": "OK", "content": _json(_ref(out.Health))}},
            }
        },
        "/readyz": {
            "get": {
                **plain,
                "summary": "The node can serve (readiness): PostgreSQL answers and it is not "
                "draining; 503 with the same body otherwise. `redis` says whether Redis "
                "answers, but does not decide readiness (commands read PostgreSQL without it)",
                "operationId": "get_readyz",
                "responses": {
                    "200": {"description": "Ready", "content": _json(_ref(out.Readiness))},
                    "503": {"description": "Not ready", "content": _json(_ref(out.Readiness))},
                },
            }
        },
        "/metrics": {
            "get": {
                **plain,
                "summary": "Prometheus metrics, text format (deploy/README.md, Metrics "
                "contract); do not expose it beyond the operator's network",
                "operationId": "get_metrics",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/ws": {
            "get": {
                **plain,
                "summary": "The session websocket: upgrade, then frames as protocol/asyncapi.json "
                "describes (the token travels in the first frame, `hello`)",
                "operationId": "get_ws",
                "responses": {
                    "101": {"description": "Switching Protocols: the websocket is open"},
                    "400": {"description": "Not a websocket upgrade request"},
                    "403": {
                        "description": "A browser page's `Origin` that is neither the node's "
                        "nor one of GATEWAY_ALLOWED_ORIGINS: `origin_forbidden`",
                        "content": _json(
                            {
                                "allOf": [_ref(out.ErrorBody)],
                                "properties": {"error": {"enum": ["origin_forbidden"]}},
                            }
                        ),
                    },
                },
            }
        },
    }


def _types() -> list[Any]:
    routes = [*ADMIN.values(), *OTHERS.values()]
    found: set[Any] = {out.ErrorBody, out.Health, out.Readiness}
    for r in routes:
        found.update(t for t in (r.body, r.answer) if isinstance(t, type))
    return sorted(found, key=lambda t: t.__name__)


def build() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(_types(), ref_template=_SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for method, suffix, _handler in (
        *admin.ROUTES,
        *birthdays.ROUTES,
        *catalogue.ROUTES,
        *reorder.ROUTES,
        *adjustments.ROUTES,
        *webhooks.ROUTES,
        *segments.ROUTES,
        *offers.ROUTES,
    ):
        path = admin.PREFIX + suffix
        paths.setdefault(path, {})[method.lower()] = _operation(
            method, path, ADMIN[(method, suffix)], True
        )
    for (method, path), route in OTHERS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, route, False)
    paths.update(_ops_paths())
    paths.update(reorder_links.PATHS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Loyalty gateway HTTP API",
            "version": "1",
            "description": "The admin API: programmes (currency, rate, rounding, rules, tiers, "
            "rewards) and members per merchant, each path scoped to one merchant (another "
            "merchant's data answers 404; see docs/loyalty.md); the broadcast of a notice; "
            "the operator's health, readiness and metrics endpoints; the websocket's upgrade "
            "(its frames: protocol/asyncapi.json). Every refusal is a JSON object with a "
            "stable `error` code and a `message` for people; each route lists its codes.",
        },
        "servers": [
            {"url": "http://127.0.0.1:8080", "description": "A node on this machine"},
            {
                "url": "https://{host}",
                "description": "The operator's gateway, behind its TLS-terminating load "
                "balancer (deploy/README.md)",
                "variables": {"host": {"default": "loyalty.example.com"}},
            },
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`: GATEWAY_ADMIN_TOKEN (the "
                    "operator's: every merchant) or one of the merchant's own admin tokens "
                    "(GATEWAY_MERCHANT_KEYS_FILE: that merchant only). Opaque strings of 32 "
                    "characters or more, not JWTs: the session tokens of the websocket are "
                    "described in protocol/asyncapi.json.",
                }
            },
        },
    }


#: What the routes of ``_ops_paths`` answer, by status: a type, the ``error`` codes of a
#: refusal, or None (no JSON body).
_OPS_ANSWERS: dict[tuple[str, str], dict[int, Any]] = {
    ("GET", "/healthz"): {200: out.Health},
    ("GET", "/readyz"): {200: out.Readiness, 503: out.Readiness},
    ("GET", "/metrics"): {200: None},
    ("GET", "/ws"): {101: None, 400: None, 403: ("origin_forbidden",)},
    **reorder_links.ANSWERS,
}


def documented(method: str, path: str, status: int) -> tuple[Any, tuple[str, ...] | None]:
    """What a response of ``status`` to ``method path`` (the route's template) may hold: the
    answer's type for a success, the ``error`` codes for a refusal (``KeyError``: the document
    does not give that route that status)."""
    if (method, path) in _OPS_ANSWERS:
        answer = _OPS_ANSWERS[(method, path)][status]
        return (None, answer) if isinstance(answer, tuple) else (answer, None)
    if path.startswith(admin.PREFIX):
        route = ADMIN[(method, path.removeprefix(admin.PREFIX))]
        admin_route = True
    else:
        route = OTHERS[(method, path)]
        admin_route = False
    if status in route.ok:
        return route.answer, None
    refusal = _refusals(route, admin_route)[str(status)]
    schema = refusal["content"]["application/json"]["schema"]
    return None, tuple(schema["properties"]["error"]["enum"])


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
