"""The checked-in AsyncAPI document is fresh and covers every frame, error code and close code."""

import json
from pathlib import Path
from typing import Any

import pytest

from protocol import asyncapi, decode_client, decode_server, encode, replies
from protocol.codes import CloseCode, ErrorCode, close_should_reconnect
from protocol.limits import MAX_FRAME_BYTES
from protocol.messages import ClientFrame, Error, Hello, Result, ResultData, ServerFrame, Welcome

SPEC = Path(asyncapi.__file__).with_name("asyncapi.json")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.build()


def _tags(union: Any) -> set[str]:
    return {t.__struct_config__.tag for t in union.__args__}


def _message(doc: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    key = ref["$ref"].rsplit("/", 1)[1]
    target = doc["channels"]["ws"]["messages"][key]["$ref"].rsplit("/", 1)[1]
    return dict(doc["components"]["messages"][target])


def _operation_names(doc: dict[str, Any], action: str) -> set[str]:
    return {
        _message(doc, ref)["name"]
        for op in doc["operations"].values()
        if op["action"] == action
        for ref in op["messages"]
    }


def test_checked_in_file_is_fresh() -> None:
    assert SPEC.read_text(encoding="utf-8") == asyncapi.render(), (
        "protocol/asyncapi.json is stale: run `make asyncapi` and commit the result"
    )


def test_render_is_deterministic_sorted_json() -> None:
    text = asyncapi.render()
    assert text == asyncapi.render()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_header(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["ws"]["address"] == "/ws"
    for server in doc["servers"].values():
        assert server["protocol"] in ("ws", "wss") and server["security"]
    scheme = doc["components"]["securitySchemes"][asyncapi.SECURITY]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert "`hello`" in scheme["description"]


def test_every_frame_type_has_a_message(doc: dict[str, Any]) -> None:
    assert _operation_names(doc, "send") == _tags(ClientFrame)
    pushes = _tags(ServerFrame) - {"welcome", "result", "error"}
    assert _operation_names(doc, "receive") == pushes


def test_one_operation_per_command_with_its_reply_and_errors(doc: dict[str, Any]) -> None:
    """Each command's operation replies with the result kinds protocol/replies.py gives it (or
    welcome, for hello) or an error, and lists its codes; each push has its own operation."""
    ops = doc["operations"]
    for cls in ClientFrame.__args__:
        op = ops[cls.__struct_config__.tag]
        assert op["action"] == "send" and [_message(doc, r)["title"] for r in op["messages"]] == [
            cls.__name__
        ]
        got = [_message(doc, r) for r in op["reply"]["messages"]]
        assert got[-1]["title"] == "Error"
        if cls is Hello:
            assert [m["title"] for m in got[:-1]] == ["Welcome"]
            assert set(replies.HELLO_ERRORS) <= set(op["x-errors"])
            continue
        reply = replies.REPLIES[cls]
        assert [m["title"] for m in got[:-1]] == [f"{d.__name__}Result" for d in reply.data]
        for m in got[:-1]:
            assert m["name"] == "result"
            data = doc["components"]["schemas"][m["title"]]["properties"]["data"]
            assert data["$ref"].rsplit("/", 1)[1] in {d.__name__ for d in reply.data}
        assert set(op["x-errors"]) == {
            e.value for e in (*reply.errors, ErrorCode.INVALID_FIELD, *replies.COMMAND_ERRORS)
        }
    for cls in ServerFrame.__args__:
        if cls not in (Welcome, Result, Error):
            op = ops[cls.__struct_config__.tag]
            assert op["action"] == "receive" and "reply" not in op


def test_the_reply_table_covers_every_command_result_kind_and_code() -> None:
    assert set(replies.REPLIES) == set(ClientFrame.__args__) - {Hello}
    kinds = {d for r in replies.REPLIES.values() for d in r.data}
    assert kinds == set(ResultData.__args__)
    placed = {e for r in replies.REPLIES.values() for e in r.errors}
    placed |= {*replies.HELLO_ERRORS, *replies.COMMAND_ERRORS, *replies.FRAME_ERRORS}
    assert placed == set(ErrorCode), f"codes no command gets: {set(ErrorCode) - placed}"


def test_the_unions_are_the_frame_unions(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name, union in (("ClientFrame", ClientFrame), ("ServerFrame", ServerFrame)):
        members = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas[name]["anyOf"]]
        assert members == [t.__name__ for t in union.__args__]


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_no_openapi_discriminator_objects(doc: dict[str, Any]) -> None:
    # AsyncAPI's `discriminator` is a string; msgspec's object form must not leak through.
    assert '"discriminator"' not in json.dumps(doc)


def test_error_codes(doc: dict[str, Any]) -> None:
    table = doc["x-error-codes"]
    assert set(table) == {c.value for c in ErrorCode}
    for code in ErrorCode:
        assert table[code.value] == {"retryable": code.retryable, "description": code.description}
        assert f"`{code.value}`" in doc["info"]["description"]


def test_close_codes(doc: dict[str, Any]) -> None:
    table = doc["x-close-codes"]
    assert set(table) == {str(c.value) for c in CloseCode}
    for code in CloseCode:
        entry = table[str(code.value)]
        assert entry["name"] == code.name
        assert entry["reconnect"] is close_should_reconnect(code)
        assert entry["description"], f"CloseCode.{code.name} has no docstring"


def test_limits(doc: dict[str, Any]) -> None:
    assert doc["x-limits"]["MAX_FRAME_BYTES"] == MAX_FRAME_BYTES
    sale_lines = doc["components"]["schemas"]["Sale"]["properties"]["lines"]
    assert sale_lines["maxItems"] == doc["x-limits"]["MAX_LINES"]


def test_examples_are_valid_frames(doc: dict[str, Any]) -> None:
    client = {t.__name__ for t in ClientFrame.__args__}
    for name, message in doc["components"]["messages"].items():
        assert message.get("examples"), f"{name} has no example"
        for example in message["examples"]:
            raw = encode(example["payload"])
            frame = decode_client(raw) if name in client else decode_server(raw)
            if message["name"] == "result":  # a typed result: its data is the message's kind
                schema = doc["components"]["schemas"][name]["properties"]["data"]["$ref"]
                assert isinstance(frame, Result)
                assert type(frame.data).__name__ == schema.rsplit("/", 1)[1]
            else:
                assert type(frame).__name__ == name
