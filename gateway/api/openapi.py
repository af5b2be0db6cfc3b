"""Build the OpenAPI 3.1 description of the admin API from its routes and request Structs.

``python -m gateway.api.openapi > gateway/api/openapi.json`` regenerates the checked-in file;
a test fails when it is stale or when a route is not described.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import msgspec

from gateway.api import admin, bodies

SUMMARIES: dict[tuple[str, str], tuple[str, type | None]] = {
    ("PUT", ""): ("Create or update the merchant's programme", bodies.ProgrammeIn),
    ("GET", ""): ("Read the merchant's programme", None),
    ("GET", "/rules"): ("List earning rules", None),
    ("PUT", "/rules/{rule}"): ("Create or replace an earning rule", bodies.RuleIn),
    ("DELETE", "/rules/{rule}"): ("Delete an earning rule", None),
    ("GET", "/tiers"): ("List tiers", None),
    ("PUT", "/tiers"): ("Replace the tier ladder", bodies.TiersIn),
    ("POST", "/tiers/evaluate"): (
        "Evaluation date: give every member the tier its window earns (downgrades too)",
        bodies.EvaluateIn,
    ),
    ("GET", "/rewards"): ("List the reward catalogue", None),
    ("PUT", "/rewards/{reward}"): ("Create or replace a reward", bodies.RewardIn),
    ("DELETE", "/rewards/{reward}"): ("Withdraw a reward (issued codes stay valid)", None),
    ("POST", "/codes/{code}/void"): ("Void an unredeemed code; its points go back", bodies.VoidIn),
    ("POST", "/members"): ("Enrol (find or create) a member by phone and/or email", bodies.EnrolIn),
    ("GET", "/members"): ("Look a member up by phone, email or card (one query parameter)", None),
    ("GET", "/members/{member}"): ("Read a member's profile and balance", None),
    ("DELETE", "/members/{member}"): (
        "Erase a member's personal data (GDPR), and that of the duplicates merged into it; a "
        "merged duplicate's id erases its survivor, which the reply names; ledger amounts "
        "stay, anonymised",
        None,
    ),
    ("GET", "/members/{member}/history"): ("Purchase history, newest first, keyset pages", None),
    ("GET", "/members/{member}/export"): ("Export everything held about a member (GDPR)", None),
    ("POST", "/members/{member}/merge"): (
        "Merge the duplicate member `source` into this one (balance, holds, identities, "
        "history, codes, tier); idempotent per `op`; 409 member_merged if either side was "
        "merged already",
        bodies.MergeIn,
    ),
    ("POST", "/expiry/run"): (
        "Run the points-expiry job for this merchant now (optionally as of a past `now`; "
        "400 invalid_field for a `now` ahead of the clock)",
        bodies.ExpiryIn,
    ),
}

_QUERY = {
    ("GET", "/members"): ["phone", "email", "card"],
    ("GET", "/members/{member}/history"): ["before", "limit"],
}

_BODY_REQUIRED = {("POST", "/members/{member}/merge"), ("POST", "/codes/{code}/void")}

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
}


def build() -> dict[str, Any]:
    bodies = sorted({t for _, t in SUMMARIES.values() if t is not None}, key=lambda t: t.__name__)
    _, schemas = msgspec.json.schema_components(bodies, ref_template="#/components/schemas/{name}")
    schemas["Error"] = _ERROR
    paths: dict[str, dict[str, Any]] = {}
    for method, suffix, _handler in admin.ROUTES:
        summary, body = SUMMARIES[(method, suffix)]
        path = admin.PREFIX + suffix
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ] + [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in _QUERY.get((method, suffix), [])
        ]
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z]+', '_', suffix) or '_programme'}",
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                **{
                    code: {
                        "description": text,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    }
                    for code, text in (
                        ("400", "Invalid request"),
                        ("401", "Missing or wrong admin token"),
                        ("404", "Not found in this merchant (other merchants' data included)"),
                        ("409", "Conflict (idempotency, code state, member merged)"),
                        ("503", "A backing store is unavailable; retry"),
                    )
                },
            },
        }
        if body is not None:
            op["requestBody"] = {
                "required": method == "PUT" or (method, suffix) in _BODY_REQUIRED,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{body.__name__}"}
                    }
                },
            }
        if (method, suffix) == ("POST", "/members"):
            op["responses"]["201"] = {"description": "Created (a new member)"}
        paths.setdefault(path, {})[method.lower()] = op
    paths["/admin/v1/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "get_openapi",
            "responses": {"200": {"description": "OK"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Loyalty gateway admin API",
            "version": "1",
            "description": "Programmes (currency, rate, rounding, rules, tiers, rewards) and "
            "members per merchant. Every path is scoped to one merchant; another merchant's "
            "data answers 404. See docs/loyalty.md.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "GATEWAY_ADMIN_TOKEN (every merchant) or one of the "
                    "merchant's own admin tokens (GATEWAY_MERCHANT_KEYS_FILE: that merchant only)",
                }
            },
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
