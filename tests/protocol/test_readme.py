"""protocol/README.md stays consistent with the code: tables and example frames."""

import json
import re
from pathlib import Path

import pytest

import protocol
from protocol import DecodeError, decode_client, decode_server
from protocol.asyncapi import limit_values
from protocol.codes import CloseCode, ErrorCode, close_should_reconnect
from protocol.messages import Error

README = Path(protocol.__file__).with_name("README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"^(C|S|C!): (.*)$", README, flags=re.M)


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_error_code_table_matches_codes() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (yes|no) \| (.+) \|$", _section("Errors"), re.M)
    assert [code for code, _, _ in rows] == [c.value for c in ErrorCode]
    for code, retryable, meaning in rows:
        assert (retryable == "yes") is ErrorCode(code).retryable, code
        assert meaning == ErrorCode(code).description, code


def test_close_code_table_matches_codes() -> None:
    rows = re.findall(
        r"^\| (\d+) \| `([A-Z_]+)` \| (yes|no) \| .+ \|$", _section("Close codes"), re.M
    )
    assert [(int(c), n) for c, n, _ in rows] == [(c.value, c.name) for c in CloseCode]
    for code, _, reconnect in rows:
        assert (reconnect == "yes") is close_should_reconnect(int(code)), code


def test_limits_table_matches_limits() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (.+) \|$", _section("Limits"), re.M))
    for name, value in limit_values().items():
        if name == "REQUEST_ID_PATTERN":
            continue  # same as ID_PATTERN
        assert name in rows, f"limit {name} missing from the README"
        if isinstance(value, int):
            assert rows[name].split()[0] == str(value), name


def test_points_to_the_machine_readable_spec() -> None:
    assert "asyncapi.json" in README and "make asyncapi" in README


@pytest.mark.parametrize(
    ("who", "line"), EXAMPLES, ids=[f"{w}{i}" for i, (w, _) in enumerate(EXAMPLES)]
)
def test_example_frames_are_valid(who: str, line: str) -> None:
    if who == "C":
        decode_client(line)
    elif who == "S":
        decode_server(line)
    else:  # a refused frame: the next S line is the error the codec gives it
        with pytest.raises(DecodeError) as info:
            decode_client(line)
        i = EXAMPLES.index((who, line))
        reply = decode_server(EXAMPLES[i + 1][1])
        assert isinstance(reply, Error)
        assert (reply.code, reply.id) == (info.value.code.value, info.value.request_id)
        assert reply.message == info.value.message


def test_every_frame_type_has_an_example() -> None:
    client = {json.loads(line)["type"] for who, line in EXAMPLES if who == "C"}
    server = {json.loads(line)["type"] for who, line in EXAMPLES if who == "S"}
    assert client >= {"hello", "ping", "subscribe", "balance", "sale", "reserve", "commit"}
    assert client >= {"release", "outcome"}
    assert server >= {"welcome", "result", "error", "balance_changed", "resync"}
    assert server >= {"presence", "notice"}
