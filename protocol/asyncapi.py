"""Build the AsyncAPI 3.0.0 document of the protocol from the frame Structs.

The document describes the protocol from a client's point of view: the operation ``send`` lists
the commands a client sends on the websocket channel ``/ws``, the operation ``receive`` the
frames the server sends back. Payload schemas are msgspec's JSON Schema of the Structs, so the
document cannot drift from the decoder; the error codes, close codes and limits travel as
``x-error-codes``, ``x-close-codes`` and ``x-limits`` (and as tables in ``info.description``).

Run ``python -m protocol.asyncapi`` (``make asyncapi``) to print it; ``protocol/asyncapi.json``
is that output, checked in and kept fresh by a test.
"""

import ast
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from protocol import codes, limits, loyalty, messages, version, wallet
from protocol.codes import CloseCode, ErrorCode, close_should_reconnect
from protocol.messages import (
    Balance,
    BalanceChanged,
    Cause,
    ClientFrame,
    Commit,
    Error,
    GetBalance,
    GetOutcome,
    Hello,
    HoldState,
    Notice,
    Outcome,
    Peer,
    Ping,
    PointsLine,
    Pong,
    Presence,
    Refresh,
    Refreshed,
    Release,
    Reserve,
    Result,
    Resync,
    Sale,
    SaleLine,
    SaleReceipt,
    Scope,
    ServerFrame,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)
from protocol.version import PROTOCOL_VERSION, SUPPORTED_VERSIONS

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "ws"
CHANNEL_ADDRESS = "/ws"
_SCHEMAS = "#/components/schemas/{name}"

# --------------------------------------------------------------------------- examples

_B = Balance(member="m-42", posted=1250, held=0, available=1250, version=17)
_B_HELD = Balance(member="m-42", posted=1250, held=500, available=750, version=18)
_B_AFTER = Balance(member="m-42", posted=1375, held=0, available=1375, version=18)
_CHANGED = BalanceChanged(
    member="m-42",
    posted=1375,
    held=0,
    available=1375,
    version=18,
    cause=Cause(kind="earn", op="pos7-000123", channel="pos", store="s-1"),
    at=1_735_689_600_000,
)
_RECEIPT = SaleReceipt(
    op="pos7-000123",
    member="m-42",
    points=125,
    breakdown=[PointsLine(rule="base-1-per-euro", points=125)],
    balance=_B_AFTER,
)
_HOLD = HoldState(
    op="pos7-000124",
    hold="pos7-000124",
    member="m-42",
    status="active",
    points=500,
    expires_at=1_735_689_720_000,
    balance=_B_HELD,
)

#: Example frames per message (Struct class name): ``(example name, frame)``.
EXAMPLES: dict[str, list[tuple[str, msgspec.Struct]]] = {
    "Hello": [("hello", Hello(id="1", versions=[1], token="eyJhbGciOi...", client="pos/7.2"))],
    "Ping": [("ping", Ping(id="2"))],
    "Refresh": [("refresh", Refresh(id="2b", token="eyJhbGciOi..."))],
    "Subscribe": [("resume", Subscribe(id="3", member="m-42", since=17))],
    "Unsubscribe": [("unsubscribe", Unsubscribe(id="4", member="m-42"))],
    "GetBalance": [("balance", GetBalance(id="5", member="m-42"))],
    "Sale": [
        (
            "sale",
            Sale(
                id="6",
                op="pos7-000123",
                member="m-42",
                total=12_550,
                lines=[SaleLine(sku="sku-1", qty=2, price=6_275, category="coffee")],
            ),
        )
    ],
    "Reserve": [("reserve", Reserve(id="7", op="pos7-000124", member="m-42", points=500))],
    "Commit": [
        (
            "partial",
            Commit(id="8", op="pos7-000125", member="m-42", hold="pos7-000124", points=300),
        )
    ],
    "Release": [("release", Release(id="9", op="pos7-000126", member="m-42", hold="pos7-000124"))],
    "GetOutcome": [("outcome", GetOutcome(id="10", op="pos7-000123"))],
    "Welcome": [
        (
            "welcome",
            Welcome(
                id="1",
                version=1,
                session="s-9f2c",
                node="gw-1",
                heartbeat_ms=25_000,
                scope=Scope(kind="pos", merchant="acme", store="s-1", terminal="pos7"),
            ),
        )
    ],
    "Result": [
        ("pong", Result(id="2", data=Pong())),
        ("refreshed", Result(id="2b", data=Refreshed(expires_at=1_735_693_200_000))),
        ("balance", Result(id="5", data=_B)),
        ("subscribed", Result(id="3", data=Subscribed(member="m-42", balance=_B_AFTER))),
        ("sale", Result(id="6", data=_RECEIPT)),
        ("hold", Result(id="7", data=_HOLD)),
        ("outcome", Result(id="10", data=Outcome(op="pos7-000123", ok=True, data=_RECEIPT))),
    ],
    "Error": [
        (
            "insufficient_points",
            Error(
                id="7",
                code=ErrorCode.INSUFFICIENT_POINTS,
                message=ErrorCode.INSUFFICIENT_POINTS.description,
            ),
        )
    ],
    "BalanceChanged": [("earn", _CHANGED)],
    "Resync": [("resync", Resync(member="m-42", balance=_B_AFTER, reason="gap"))],
    "Presence": [
        (
            "app online",
            Presence(member="m-42", online=[Peer(session="gw-2-17", channel="app", node="gw-2")]),
        )
    ],
    "Notice": [
        (
            "offer",
            Notice(
                notice="n-1f2e",
                merchant="acme",
                kind="offer",
                payload={"title": "Double points on coffee today"},
                at=1_735_689_600_000,
            ),
        )
    ],
}
for _module in (loyalty, wallet):  # the loyalty programme's and the wallet's frames
    for _name, _examples in _module.EXAMPLES.items():
        EXAMPLES.setdefault(_name, []).extend(_examples)

# --------------------------------------------------------------------------- helpers


def _clean(text: str) -> str:
    """Collapse a docstring to one line of text."""
    return re.sub(r"\s+", " ", text).strip()


def _attribute_docs(module: ModuleType) -> dict[str, dict[str, str]]:
    """Attribute docstrings (a string literal right after an assignment) per class.

    Python keeps no such docstrings at run time, so they are read from the module's source.
    """
    if not module.__file__:  # pragma: no cover - always set for source modules
        return {}
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        last: str | None = None
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                last = stmt.target.id
            elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                last = stmt.targets[0].id
            elif (
                last
                and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                docs[last] = _clean(stmt.value.value)
                last = None
            else:
                last = None
        if docs:
            out[cls.name] = docs
    return out


def _tag(cls: Any) -> str:
    return str(cls.__struct_config__.tag)


def _fix_schema(node: Any) -> Any:
    """Make msgspec's JSON Schema valid AsyncAPI Schema, recursively.

    AsyncAPI's ``discriminator`` is a property name string that must equal the schema name,
    which our wire tags are not; msgspec emits OpenAPI's object form. Keep it as
    ``x-discriminator`` (the ``enum`` of each tag field already makes the unions exact).
    """
    if isinstance(node, dict):
        return {
            ("x-discriminator" if k == "discriminator" else k): (
                _clean(v) if k == "description" and isinstance(v, str) else _fix_schema(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_fix_schema(v) for v in node]
    return node


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ClientFrame, ServerFrame], ref_template=_SCHEMAS
    )
    schemas: dict[str, Any] = _fix_schema(components)
    for module in (messages, loyalty, wallet):
        for cls_name, docs in _attribute_docs(module).items():
            props = schemas.get(cls_name, {}).get("properties", {})
            for field, doc in docs.items():
                if field in props:
                    props[field].setdefault("description", doc)
    return schemas


def _message(cls: Any, correlated: bool) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "name": _tag(cls),
        "title": cls.__name__,
        "contentType": "application/json",
        "payload": {"$ref": _SCHEMAS.format(name=cls.__name__)},
    }
    if cls.__doc__:
        msg["summary"] = _clean(cls.__doc__)
    if correlated:
        msg["correlationId"] = {"$ref": "#/components/correlationIds/requestId"}
    examples = EXAMPLES.get(cls.__name__, [])
    if examples:
        msg["examples"] = [
            {"name": name, "payload": msgspec.to_builtins(frame)} for name, frame in examples
        ]
    return msg


def error_codes() -> dict[str, dict[str, Any]]:
    """Every error code with its ``retryable`` flag and description."""
    return {c.value: {"retryable": c.retryable, "description": c.description} for c in ErrorCode}


def close_codes() -> dict[str, dict[str, Any]]:
    """Every close code with its name, whether to reconnect, and its description."""
    docs = _attribute_docs(codes).get("CloseCode", {})
    return {
        str(c.value): {
            "name": c.name,
            "reconnect": close_should_reconnect(c),
            "description": docs.get(c.name, ""),
        }
        for c in CloseCode
    }


def limit_values() -> dict[str, int | str]:
    """The documented bounds of ``protocol.limits`` (public upper-case constants)."""
    return {
        k: v
        for k, v in vars(limits).items()
        if k.isupper() and not k.startswith("_") and isinstance(v, int | str)
    }


def _description() -> str:
    err = "\n".join(
        f"| `{c}` | {'yes' if e['retryable'] else 'no'} | {e['description']} |"
        for c, e in error_codes().items()
    )
    close = "\n".join(
        f"| {c} | `{e['name']}` | {'yes' if e['reconnect'] else 'no'} | {e['description']} |"
        for c, e in close_codes().items()
    )
    lim = "\n".join(f"| `{k}` | `{v}` |" for k, v in limit_values().items())
    return "\n\n".join(
        [
            "Live loyalty sessions for POS terminals and apps over one websocket. This document "
            "is written from the client's side: `send` is what a client sends, `receive` what "
            "the server sends. Every frame is one JSON object whose `type` selects the message; "
            "a command's `id` is echoed in its `result` or `error`. See protocol/README.md.",
            "## Versions\n\n" + _clean(version.__doc__ or ""),
            "## Error codes\n\n`retryable` tells whether sending the same request again "
            "(same `op`) may succeed later.\n\n| code | retryable | meaning |\n| --- | --- | --- |\n"
            + err,
            "## Close codes\n\n3000-3499 are transient: reconnect with jittered exponential "
            "backoff (resume with `subscribe.since`). 3500-3999 are terminal: do not reconnect "
            "until the cause is fixed (new token, upgraded client). 1000/1001 are normal "
            "closure/going away; any other code: reconnect with backoff.\n\n"
            "| code | name | reconnect | meaning |\n| --- | --- | --- | --- |\n" + close,
            "## Limits\n\n| limit | value |\n| --- | --- |\n" + lim,
        ]
    )


# --------------------------------------------------------------------------- document


def build() -> dict[str, Any]:
    """Return the AsyncAPI 3.0.0 document as a plain dict."""
    client = [(cls, True) for cls in ClientFrame.__args__]
    server = [(cls, "id" in cls.__struct_fields__) for cls in ServerFrame.__args__]
    messages_ = {cls.__name__: _message(cls, corr) for cls, corr in client + server}

    def refs(frames: list[tuple[Any, bool]]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{CHANNEL}/messages/{cls.__name__}"} for cls, _ in frames]

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Loyalty gateway websocket protocol",
            "version": str(PROTOCOL_VERSION),
            "description": _description(),
        },
        "defaultContentType": "application/json",
        "channels": {
            CHANNEL: {
                "address": CHANNEL_ADDRESS,
                "title": "Session websocket",
                "description": "One websocket per session; text frames, one JSON object each. "
                "The first command must be `hello`.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages_},
                "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0"}},
            }
        },
        "operations": {
            "send": {
                "action": "send",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "title": "Client commands",
                "summary": "Commands a client sends; each gets exactly one `result` or `error` "
                "with the same `id`.",
                "messages": refs(client),
            },
            "receive": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "title": "Server frames",
                "summary": "Replies (`welcome`, `result`, `error`) and pushes (`balance_changed`, "
                "`resync`). Ignore unknown types and unknown fields.",
                "messages": refs(server),
            },
        },
        "components": {
            "schemas": _schemas(),
            "messages": messages_,
            "correlationIds": {
                "requestId": {
                    "description": "The command's `id`, echoed by its `result` or `error`.",
                    "location": "$message.payload#/id",
                }
            },
        },
        "x-protocol-versions": list(SUPPORTED_VERSIONS),
        "x-error-codes": error_codes(),
        "x-close-codes": close_codes(),
        "x-limits": limit_values(),
    }


def render() -> str:
    """The document as deterministic JSON: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
