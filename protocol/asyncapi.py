"""Build the AsyncAPI 3.0.0 document of the protocol from the frame Structs.

The document describes the protocol from a client's point of view, on one websocket channel,
``/ws``: one ``send`` operation per client command, whose ``reply`` is the ``result`` it is
answered with (one message per kind of ``result`` data) or an ``error`` (its possible codes in
the operation's ``x-errors``), and one ``receive`` operation per push. ``protocol/replies.py``
says which command gets which reply. Payload schemas are msgspec's JSON Schema of the Structs,
so the document cannot drift from the decoder; ``ClientFrame`` and ``ServerFrame`` are the two
unions (what a code generator types a socket's frames with). The servers name where ``/ws``
is, and the security scheme the token ``hello`` carries. The error codes, close codes and
limits travel as ``x-error-codes``, ``x-close-codes`` and ``x-limits`` (and as tables in
``info.description``).

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

from protocol import codes, limits, loyalty, messages, replies, version, wallet
from protocol.codes import CloseCode, ErrorCode, close_should_reconnect
from protocol.examples import EXAMPLES, results_of
from protocol.messages import ClientFrame, Error, Hello, Result, ResultData, ServerFrame, Welcome
from protocol.version import PROTOCOL_VERSION, SUPPORTED_VERSIONS

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "ws"
CHANNEL_ADDRESS = "/ws"
_SCHEMAS = "#/components/schemas/{name}"
#: The security scheme of the token ``hello`` carries.
SECURITY = "helloToken"
#: The server frames that answer a command; every other server frame is a push.
_REPLY_FRAMES = (Welcome, Result, Error)

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


def _reply_struct(data: Any) -> Any:
    """The ``result`` frame whose ``data`` is a ``data``: the typed reply of the commands
    answered with that kind (``Result`` is the union of them all)."""
    return msgspec.defstruct(
        f"{data.__name__}Result",
        [("id", str), ("data", data)],
        tag_field="type",
        tag="result",
        kw_only=True,
        frozen=True,
        module=__name__,
        namespace={"__doc__": f"A `result` carrying `{_tag(data)}` data."},
    )


#: One typed ``result`` per kind of data, by the data's Struct.
REPLY_STRUCTS: dict[Any, Any] = {data: _reply_struct(data) for data in ResultData.__args__}


def _schemas() -> dict[str, Any]:
    (client, server, *_), components = msgspec.json.schema_components(
        [ClientFrame, ServerFrame, *REPLY_STRUCTS.values()], ref_template=_SCHEMAS
    )
    components["ClientFrame"] = {
        "title": "ClientFrame",
        "description": "Every command a client sends (on `type`).",
        **client,
    }
    components["ServerFrame"] = {
        "title": "ServerFrame",
        "description": "Every frame the server sends (on `type`): replies and pushes. Ignore "
        "a `type` you do not know.",
        **server,
    }
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


def _reply_message(data: Any) -> dict[str, Any]:
    struct = REPLY_STRUCTS[data]
    msg = _message(struct, True)
    if data.__doc__:
        msg["summary"] += " " + _clean(data.__doc__)
    msg["examples"] = [
        {"name": name, "payload": msgspec.to_builtins(frame)} for name, frame in results_of(data)
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
            "is written from the client's side: each command is a `send` operation whose "
            "`reply` is its `result` (one message per kind of data) or an `error` (the codes "
            "it may get are its `x-errors`); each push is a `receive` operation. Every frame is "
            "one JSON object whose `type` selects the message; a command's `id` is echoed in "
            "its `result` or `error`. The session's token travels in `hello` (security scheme "
            "`helloToken`). See protocol/README.md.",
            "## Errors any frame may get\n\nA frame that does not decode as a command: "
            + _codes(replies.FRAME_ERRORS)
            + ". Any command: "
            + _codes(replies.COMMAND_ERRORS)
            + " (`x-frame-errors`, `x-command-errors`).",
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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{CHANNEL}/messages/{name}"}


def _codes(errors: tuple[ErrorCode, ...]) -> str:
    return ", ".join(f"`{e.value}`" for e in errors) or "none of its own"


def _command(cls: Any) -> dict[str, Any]:
    """The operation of one client command: the command, its reply, its error codes."""
    own: tuple[ErrorCode, ...]
    if cls is Hello:
        answers, own = [Welcome.__name__], replies.HELLO_ERRORS
    else:
        reply = replies.REPLIES[cls]
        answers, own = [REPLY_STRUCTS[d].__name__ for d in reply.data], reply.errors
    errors = tuple(dict.fromkeys((*own, ErrorCode.INVALID_FIELD, *replies.COMMAND_ERRORS)))
    kinds = " or ".join(f"`{n}`" for n in answers)
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{CHANNEL}"},
        "title": cls.__name__,
        "summary": _clean(cls.__doc__ or f"The `{_tag(cls)}` command."),
        "description": f"Answered with {kinds} (same `id`), or an `error` whose `code` is one "
        f"of its own, {_codes(own)}, or one any command may get (see `x-errors`).",
        "messages": [_ref(cls.__name__)],
        "reply": {
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "messages": [_ref(n) for n in answers] + [_ref(Error.__name__)],
        },
        "x-errors": [e.value for e in errors],
    }


def _push(cls: Any) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{CHANNEL}"},
        "title": cls.__name__,
        "summary": _clean(cls.__doc__ or f"The `{_tag(cls)}` push."),
        "description": "Pushed by the server, not an answer to a command (no `id`).",
        "messages": [_ref(cls.__name__)],
    }


_SECURITY_DESCRIPTION = (
    "A JWT signed with HMAC-SHA256 (HS256), minted by the operator (GATEWAY_JWT_SECRET, no "
    "`kid`) or by the merchant's own back end (one of its signing keys, named by `kid`): "
    "protocol/README.md, Tokens, lists its claims (`typ`, `mer`, `sto`, `ter`, `sub`, `chn`, "
    "`exp`). It does not travel in an HTTP header or the URL: the websocket upgrade carries no "
    "credentials, and the token is the `token` field of the first frame, `hello` (and of "
    "`refresh`, which replaces it before it expires). A bad token is answered `token_invalid` "
    "(close 3500), an expired one `token_expired` (close 3501)."
)


def _servers() -> dict[str, Any]:
    security = [{"$ref": f"#/components/securitySchemes/{SECURITY}"}]
    return {
        "local": {
            "host": "127.0.0.1:8080",
            "protocol": "ws",
            "title": "A node on this machine",
            "description": "`python -m gateway serve` listens on GATEWAY_HOST:GATEWAY_PORT "
            "(127.0.0.1:8080); `make run` starts two nodes, on 8081 and 8082.",
            "security": security,
        },
        "production": {
            "host": "{host}",
            "protocol": "wss",
            "title": "The operator's gateway",
            "description": "Behind the operator's TLS-terminating load balancer or ingress "
            "(deploy/README.md); any node serves any member, so no affinity is needed.",
            "variables": {
                "host": {
                    "description": "The gateway's public host name (with its port if not 443).",
                    "default": "loyalty.example.com",
                }
            },
            "security": security,
        },
    }


def build() -> dict[str, Any]:
    """Return the AsyncAPI 3.0.0 document as a plain dict."""
    client = list(ClientFrame.__args__)
    pushes = [cls for cls in ServerFrame.__args__ if cls not in _REPLY_FRAMES]
    messages_: dict[str, Any] = {cls.__name__: _message(cls, True) for cls in client}
    messages_[Welcome.__name__] = _message(Welcome, True)
    messages_.update({REPLY_STRUCTS[d].__name__: _reply_message(d) for d in REPLY_STRUCTS})
    messages_[Error.__name__] = _message(Error, True)
    messages_.update({cls.__name__: _message(cls, False) for cls in pushes})
    operations = {_tag(cls): _command(cls) for cls in client}
    operations.update({_tag(cls): _push(cls) for cls in pushes})
    assert len(operations) == len(client) + len(pushes), "a command and a push share a type"
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Loyalty gateway websocket protocol",
            "version": str(PROTOCOL_VERSION),
            "description": _description(),
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": {
            CHANNEL: {
                "address": CHANNEL_ADDRESS,
                "title": "Session websocket",
                "description": "One websocket per session; text frames, one JSON object each. "
                "The first command must be `hello`, with the session's token.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages_},
                "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0"}},
            }
        },
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": messages_,
            "securitySchemes": {
                SECURITY: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": _SECURITY_DESCRIPTION,
                }
            },
            "correlationIds": {
                "requestId": {
                    "description": "The command's `id`, echoed by its `result` or `error`.",
                    "location": "$message.payload#/id",
                }
            },
        },
        "x-protocol-versions": list(SUPPORTED_VERSIONS),
        "x-error-codes": error_codes(),
        "x-frame-errors": [e.value for e in replies.FRAME_ERRORS],
        "x-command-errors": [e.value for e in replies.COMMAND_ERRORS],
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
