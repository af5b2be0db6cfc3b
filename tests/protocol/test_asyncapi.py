"""The checked-in AsyncAPI document is fresh and covers every frame, error code and close code."""

import json
from pathlib import Path
from typing import Any

import pytest

from protocol import asyncapi, decode_client, decode_server, encode
from protocol.codes import CloseCode, ErrorCode, close_should_reconnect
from protocol.limits import MAX_FRAME_BYTES
from protocol.messages import ClientFrame, ServerFrame

SPEC = Path(asyncapi.__file__).with_name("asyncapi.json")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.build()


def _tags(union: Any) -> set[str]:
    return {t.__struct_config__.tag for t in union.__args__}


def _operation_names(doc: dict[str, Any], op: str) -> set[str]:
    names = set()
    for ref in doc["operations"][op]["messages"]:
        key = ref["$ref"].rsplit("/", 1)[1]
        target = doc["channels"]["ws"]["messages"][key]["$ref"].rsplit("/", 1)[1]
        names.add(doc["components"]["messages"][target]["name"])
    return names


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
    assert doc["operations"]["send"]["action"] == "send"
    assert doc["operations"]["receive"]["action"] == "receive"


def test_every_frame_type_has_a_message(doc: dict[str, Any]) -> None:
    assert _operation_names(doc, "send") == _tags(ClientFrame)
    assert _operation_names(doc, "receive") == _tags(ServerFrame)


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
            assert type(frame).__name__ == name
