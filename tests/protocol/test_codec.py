"""Decoding: round trips, every error class, and that nothing but DecodeError escapes."""

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    SUPPORTED_VERSIONS,
    CloseCode,
    DecodeError,
    ErrorCode,
    close_should_reconnect,
    decode_client,
    decode_server,
    encode,
    loyalty,
    negotiate,
    wallet,
)
from protocol import limits as L
from protocol.codes import ERROR_DESCRIPTIONS
from protocol.messages import (
    Balance,
    BalanceChanged,
    Cause,
    ClientFrame,
    Commit,
    Error,
    ErrorInfo,
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
    Unsubscribed,
    Welcome,
)

PROPERTY = settings(max_examples=400, deadline=None)
CLIENT_TYPES = sorted(t.__struct_config__.tag for t in ClientFrame.__args__)

# --------------------------------------------------------------------------- round trips

_B = Balance(member="m-1", posted=10, held=2, available=8, version=3)
_CHANGE = BalanceChanged(
    member="m-1", posted=10, held=2, available=8, version=3, cause=Cause(kind="earn", op="o1"), at=1
)
_RECEIPT = SaleReceipt(
    op="o1", member="m-1", points=5, breakdown=[PointsLine(rule="r", points=5)], balance=_B
)
_HOLD = HoldState(op="h", hold="h", member="m-1", status="active", points=2, expires_at=9)

CLIENT_FRAMES: list[Any] = [
    Hello(id="1", versions=[1, 2], token="t", client="pos/1"),
    Ping(id="2"),
    Refresh(id="2b", token="t"),
    Subscribe(id="3", member="m-1"),
    Subscribe(id="3b", member="m-1", since=0),
    Unsubscribe(id="4", member="m-1"),
    GetBalance(id="5", member="m-1"),
    Sale(id="6", op="o1", member="m-1", total=0),
    Sale(
        id="6b",
        op="o1",
        member="m-1",
        total=L.MAX_MINOR_UNITS,
        lines=[SaleLine(sku="s", qty=1, price=0, category="c", name="n")] * L.MAX_LINES,
    ),
    Reserve(id="7", op="o2", member="m-1", points=L.MAX_POINTS, ttl_ms=L.HOLD_TTL_MIN_MS),
    Commit(id="8", op="o3", member="m-1", hold="o2"),
    Commit(id="8b", op="o3", member="m-1", hold="o2", points=1),
    Release(id="9", op="o4", member="m-1", hold="o2"),
    GetOutcome(id="10", op="o1"),
]

SERVER_FRAMES: list[Any] = [
    Welcome(
        id="1",
        version=1,
        session="s",
        node="n",
        heartbeat_ms=1,
        scope=Scope(kind="app", merchant="m"),
    ),
    Result(id="2", data=Pong()),
    Result(id="3", data=Subscribed(member="m-1", balance=_B, missed=[_CHANGE], recovered=False)),
    Result(id="4", data=Unsubscribed(member="m-1")),
    Result(id="5", data=_B),
    Result(id="6", data=_RECEIPT),
    Result(id="7", data=_HOLD),
    Result(id="8", data=Outcome(op="o1", ok=True, data=_RECEIPT)),
    Result(id="9", data=Outcome(op="o1", ok=False, error=ErrorInfo(code="timeout", message="m"))),
    Error(code="malformed_frame", message="m"),
    Error(id="10", code="timeout", message="m", retryable=True),
    _CHANGE,
    Resync(member="m-1", balance=_B, reason="gap"),
    Presence(member="m-1", online=[Peer(session="n-1", channel="app", node="n")]),
    Notice(notice="n1", merchant="m", kind="offer", payload={"title": "2x"}, at=1),
]
# The loyalty programme's frames (protocol/loyalty.py) and their examples.
_PUSHES = (
    "TierChanged",
    "MemberMerged",
    "CodeChanged",
    "ProfileChanged",
    "OffersChanged",
    "Refetch",
)
for _examples in (loyalty.EXAMPLES, wallet.EXAMPLES):  # and the wallet's (protocol/wallet.py)
    CLIENT_FRAMES += [f for name, ex in _examples.items() if name not in _PUSHES for _, f in ex]
    SERVER_FRAMES += [f for name, ex in _examples.items() if name in _PUSHES for _, f in ex]


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=lambda f: type(f).__name__)
def test_client_round_trip(frame: Any) -> None:
    assert decode_client(encode(frame)) == frame
    assert decode_client(encode(frame).decode()) == frame  # str input too


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=lambda f: type(f).__name__)
def test_server_round_trip(frame: Any) -> None:
    assert decode_server(encode(frame)) == frame


def test_every_frame_type_is_covered() -> None:
    assert {type(f) for f in CLIENT_FRAMES} == set(ClientFrame.__args__)
    assert {type(f) for f in SERVER_FRAMES} == set(ServerFrame.__args__)


# --------------------------------------------------------------------------- error classes


def _error(data: bytes | str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_client(data)
    return info.value


@pytest.mark.parametrize("data", [b"", b"{", b"hello", b'{"type":"ping","id":"1"} x', b"\xff"])
def test_not_json_is_malformed(data: bytes) -> None:
    err = _error(data)
    assert (err.code, err.request_id) == (ErrorCode.MALFORMED_FRAME, None)


def test_lone_surrogate_in_str_is_malformed() -> None:
    assert _error('{"type":"ping","id":"\ud800"}').code is ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize("data", [b"[]", b'["ping"]', b"1", b'"ping"', b"null", b"true"])
def test_json_non_object_is_malformed(data: bytes) -> None:
    assert _error(data).code is ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize(
    "data", [b"{}", b'{"id":"r1"}', b'{"id":"r1","type":null}', b'{"id":"r1","type":7}']
)
def test_missing_type_is_malformed(data: bytes) -> None:
    err = _error(data)
    assert err.code is ErrorCode.MALFORMED_FRAME
    assert err.request_id == ("r1" if b"r1" in data else None)


@pytest.mark.parametrize("type_", ["transfer", "welcome", "result", "PING", ""])
def test_unknown_type_echoes_request_id(type_: str) -> None:
    err = _error(json.dumps({"type": type_, "id": "r1"}))
    assert (err.code, err.request_id) == (ErrorCode.UNKNOWN_TYPE, "r1")


def _reserve(**fields: Any) -> dict[str, Any]:
    return {"type": "reserve", "id": "r1", "op": "o1", "member": "m-1", "points": 5} | fields


BAD_FIELDS = {
    "points negative": _reserve(points=-1),
    "points zero": _reserve(points=0),
    "points huge": _reserve(points=L.MAX_POINTS + 1),
    "points enormous": _reserve(points=10**40),
    "points float": _reserve(points=1.5),
    "points integral float": _reserve(points=5.0),
    "points string": _reserve(points="5"),
    "points null": _reserve(points=None),
    "points missing": {k: v for k, v in _reserve().items() if k != "points"},
    "member bad chars": _reserve(member="m 1"),
    "member trailing newline": _reserve(member="m-1\n"),
    "member empty": _reserve(member=""),
    "member 65 chars": _reserve(member="m" * 65),
    "op non-ascii": _reserve(op="opé"),
    "ttl too short": _reserve(ttl_ms=L.HOLD_TTL_MIN_MS - 1),
    "ttl too long": _reserve(ttl_ms=L.HOLD_TTL_MAX_MS + 1),
    "since negative": {"type": "subscribe", "id": "r1", "member": "m", "since": -1},
    "since over int64": {"type": "subscribe", "id": "r1", "member": "m", "since": 2**63},
    "token empty": {"type": "hello", "id": "r1", "versions": [1], "token": ""},
    "token too long": {"type": "hello", "id": "r1", "versions": [1], "token": "t" * 4097},
    "sale too many lines": {
        "type": "sale",
        "id": "r1",
        "op": "o",
        "member": "m",
        "total": 1,
        "lines": [{"sku": "s", "qty": 1, "price": 1}] * (L.MAX_LINES + 1),
    },
    "sale line qty zero": {
        "type": "sale",
        "id": "r1",
        "op": "o",
        "member": "m",
        "total": 1,
        "lines": [{"sku": "s", "qty": 0, "price": 1}],
    },
    "total too large": {"type": "sale", "id": "r1", "op": "o", "member": "m", "total": 10**8 + 1},
    "return too many lines": {
        "type": "return",
        "id": "r1",
        "op": "o",
        "member": "m",
        "sale": "s",
        "lines": [{"sku": "s", "qty": 1}] * 201,
    },
}


@pytest.mark.parametrize("frame", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_bad_field_is_invalid_field_with_request_id(frame: dict[str, Any]) -> None:
    err = _error(json.dumps(frame))
    assert (err.code, err.request_id) == (ErrorCode.INVALID_FIELD, "r1")


@pytest.mark.parametrize("rid", ["a b", "a\n", "r" * 65, "", "é", 7, None, ["r1"]])
def test_bad_request_id_is_invalid_field_without_echo(rid: Any) -> None:
    err = _error(json.dumps({"type": "ping", "id": rid}))
    assert (err.code, err.request_id) == (ErrorCode.INVALID_FIELD, None)


def test_request_id_of_64_chars_is_fine() -> None:
    assert decode_client(json.dumps({"type": "ping", "id": "r" * 64})) == Ping(id="r" * 64)


def test_frame_size_limit_is_in_bytes() -> None:
    frame = b'{"type":"ping","id":"1"}'
    exact = frame + b" " * (L.MAX_FRAME_BYTES - len(frame))
    assert decode_client(exact) == Ping(id="1")
    err = _error(exact + b" ")
    assert (err.code, err.request_id) == (ErrorCode.FRAME_TOO_LARGE, None)
    # a str is measured in UTF-8 bytes, not characters
    wide = '{"type":"ping","id":"1","pad":"' + "é" * (L.MAX_FRAME_BYTES // 2) + '"}'
    assert len(wide) < L.MAX_FRAME_BYTES < len(wide.encode())
    assert _error(wide).code is ErrorCode.FRAME_TOO_LARGE
    assert _error(b"[" * (L.MAX_FRAME_BYTES + 1)).code is ErrorCode.FRAME_TOO_LARGE


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    assert _error(b"[" * 50_000).code is ErrorCode.MALFORMED_FRAME
    unclosed = _error(b'{"type":"ping","id":"1","x":' + b"[" * 20_000)
    assert unclosed.code is ErrorCode.MALFORMED_FRAME
    closed = b'{"type":"ping","id":"1","x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert len(closed) < 65_536
    assert _error(closed).code is ErrorCode.MALFORMED_FRAME  # msgspec's depth limit


def test_unknown_fields_are_refused_in_commands_and_ignored_in_server_frames() -> None:
    """Forward compatibility runs one way: a client ignores server fields it does not know
    (the server may add some within version 1); the server refuses command fields it does not
    define (issue "The contract as a client author reads it", item 10)."""
    err = _error(b'{"type":"ping","id":"1","future":{"a":[1]}}')
    assert (err.code, err.request_id) == (ErrorCode.INVALID_FIELD, "1")
    assert decode_server(b'{"type":"result","id":"1","data":{"kind":"pong"},"later":2}') == (
        Result(id="1", data=Pong())
    )


def test_decode_server_errors() -> None:
    with pytest.raises(DecodeError) as info:
        decode_server(b'{"type":"promo","id":"1"}')
    assert (info.value.code, info.value.request_id) == (ErrorCode.UNKNOWN_TYPE, "1")
    with pytest.raises(DecodeError) as info:
        decode_server(b'{"type":"welcome","id":"1"}')
    assert info.value.code is ErrorCode.INVALID_FIELD
    with pytest.raises(DecodeError) as info:
        decode_server(b"nope")
    assert info.value.code is ErrorCode.MALFORMED_FRAME


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(CLIENT_TYPES),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
# Objects that look like frames, so that generation reaches field validation.
frame_like = st.builds(
    lambda base, extra: extra | base,
    st.fixed_dictionaries(
        {"type": st.sampled_from(CLIENT_TYPES)},
        optional={
            "id": st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True) | json_values,
            "member": st.just("m-1") | json_values,
            "op": st.just("o-1") | json_values,
            "points": st.integers(-5, L.MAX_POINTS + 5) | json_values,
            "token": st.just("t") | json_values,
            "versions": st.lists(st.integers(0, 3), max_size=3) | json_values,
        },
    ),
    st.dictionaries(st.sampled_from(["hold", "total", "ttl_ms", "since", "lines"]), json_values),
)


def _check_classification(value: Any, data: bytes) -> None:
    """decode_client either returns a frame or raises DecodeError, classified as documented."""
    try:
        frame = decode_client(data)
    except DecodeError as err:
        assert isinstance(err.code, ErrorCode)
        assert err.request_id is None or err.request_id == value.get("id")
        if len(data) > L.MAX_FRAME_BYTES:
            assert err.code is ErrorCode.FRAME_TOO_LARGE
        elif not isinstance(value, dict) or not isinstance(value.get("type"), str):
            assert err.code is ErrorCode.MALFORMED_FRAME
        elif value["type"] not in CLIENT_TYPES:
            assert err.code is ErrorCode.UNKNOWN_TYPE
        else:
            assert err.code is ErrorCode.INVALID_FIELD
    else:
        assert isinstance(value, dict) and value["type"] == frame.__struct_config__.tag


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    for decode in (decode_client, decode_server):
        try:
            decode(data)
        except DecodeError as err:
            assert isinstance(err.code, ErrorCode)


@PROPERTY
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=100))
def test_any_str_decode_or_raise_decode_error(data: str) -> None:
    for decode in (decode_client, decode_server):
        try:
            decode(data)
        except DecodeError as err:
            assert isinstance(err.code, ErrorCode)


@PROPERTY
@given(json_values)
def test_any_json_value_is_classified(value: Any) -> None:
    _check_classification(value, json.dumps(value).encode())


@PROPERTY
@given(frame_like)
def test_frame_like_objects_are_classified(value: dict[str, Any]) -> None:
    _check_classification(value, json.dumps(value).encode())


ids = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True)
texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=L.TEXT_MAX_LEN,
)
points = st.integers(1, L.MAX_POINTS)
versions = st.integers(0, L.MAX_VERSION)
sale_lines = st.builds(
    SaleLine,
    sku=ids,
    qty=st.integers(1, 10_000),
    price=st.integers(0, L.MAX_MINOR_UNITS),
    category=st.none() | ids,
    name=texts,
)
client_frames = st.one_of(
    st.builds(
        Hello,
        id=ids,
        versions=st.lists(versions, max_size=4),
        token=st.text(min_size=1, max_size=64),
        client=texts,
    ),
    st.builds(Ping, id=ids),
    st.builds(Subscribe, id=ids, member=ids, since=st.none() | versions),
    st.builds(Unsubscribe, id=ids, member=ids),
    st.builds(GetBalance, id=ids, member=ids),
    st.builds(
        Sale,
        id=ids,
        op=ids,
        member=ids,
        total=st.integers(0, L.MAX_MINOR_UNITS),
        lines=st.lists(sale_lines, max_size=5),
    ),
    st.builds(
        Reserve,
        id=ids,
        op=ids,
        member=ids,
        points=points,
        ttl_ms=st.integers(L.HOLD_TTL_MIN_MS, L.HOLD_TTL_MAX_MS),
    ),
    st.builds(Commit, id=ids, op=ids, member=ids, hold=ids, points=st.none() | points),
    st.builds(Release, id=ids, op=ids, member=ids, hold=ids),
    st.builds(GetOutcome, id=ids, op=ids),
)

ints = st.integers(0, 2**53)
balances = st.builds(
    Balance,
    member=ids,
    posted=ints,
    held=ints,
    available=st.integers(-(2**53), 2**53),
    version=ints,
)
changes = st.builds(
    BalanceChanged,
    member=ids,
    posted=ints,
    held=ints,
    available=ints,
    version=ints,
    cause=st.builds(Cause, kind=texts, op=ids, channel=texts, store=texts),
    at=ints,
)
receipts = st.builds(
    SaleReceipt,
    op=ids,
    member=ids,
    points=ints,
    breakdown=st.lists(st.builds(PointsLine, rule=texts, points=ints, sku=st.none() | ids)),
    balance=balances,
)
holds = st.builds(
    HoldState,
    op=ids,
    hold=ids,
    member=ids,
    status=st.sampled_from(["active", "committed", "released", "expired"]),
    points=ints,
    committed=ints,
    expires_at=ints,
    balance=st.none() | balances,
)
outcomes = st.builds(
    Outcome,
    op=ids,
    ok=st.booleans(),
    data=st.none() | balances | receipts | holds,
    error=st.none() | st.builds(ErrorInfo, code=texts, message=texts, retryable=st.booleans()),
)
result_data = st.one_of(
    balances,
    receipts,
    holds,
    outcomes,
    st.just(Pong()),
    st.builds(Unsubscribed, member=ids),
    st.builds(
        Subscribed,
        member=ids,
        balance=balances,
        missed=st.lists(changes, max_size=3),
        recovered=st.booleans(),
    ),
)
server_frames = st.one_of(
    st.builds(
        Welcome,
        id=ids,
        version=st.integers(0, 10),
        session=texts,
        node=texts,
        heartbeat_ms=ints,
        scope=st.builds(
            Scope,
            kind=st.sampled_from(["pos", "app"]),
            merchant=texts,
            store=st.none() | texts,
            terminal=st.none() | texts,
            member=st.none() | texts,
            channel=texts,
        ),
    ),
    st.builds(Result, id=ids, data=result_data),
    st.builds(
        Error,
        code=st.sampled_from(list(ErrorCode)).map(str),
        message=texts,
        id=st.none() | ids,
        retryable=st.booleans(),
    ),
    changes,
    st.builds(Resync, member=ids, balance=balances, reason=texts),
)


@PROPERTY
@given(client_frames)
def test_valid_client_frames_round_trip(frame: Any) -> None:
    assert decode_client(encode(frame)) == frame


@PROPERTY
@given(server_frames)
def test_valid_server_frames_round_trip(frame: Any) -> None:
    assert decode_server(encode(frame)) == frame


# --------------------------------------------------------------------------- rules


def test_negotiate() -> None:
    assert SUPPORTED_VERSIONS == (1,)
    assert negotiate([1]) == 1
    assert negotiate([3, 2, 1]) == 1
    assert negotiate(v for v in (1, 1)) == 1
    assert negotiate([]) is None
    assert negotiate([0, 2, 99]) is None


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (1000, True),
        (1001, True),
        (1006, True),
        (1009, True),
        (1011, True),
        (2999, True),
        (3000, True),
        (3499, True),
        (3500, False),
        (3750, False),
        (3999, False),
        (4000, True),
    ],
)
def test_close_should_reconnect_ranges(code: int, reconnect: bool) -> None:
    assert close_should_reconnect(code) is reconnect


def test_close_codes_sit_in_their_range() -> None:
    for code in CloseCode:
        assert 3000 <= code <= 3999
        assert close_should_reconnect(code) is (code < 3500)


def test_every_error_code_is_documented() -> None:
    assert set(ERROR_DESCRIPTIONS) == set(ErrorCode)
    for code in ErrorCode:
        assert code.description.strip().endswith(".")
        assert isinstance(code.retryable, bool)
    assert {c for c in ErrorCode if c.retryable} == {
        ErrorCode.RATE_LIMITED,
        ErrorCode.MEMBER_SESSIONS_FULL,  # another of its sessions may close
        ErrorCode.INTERNAL,
        ErrorCode.UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.DRAINING,
    }


def test_encode_is_compact_json() -> None:
    assert encode(Ping(id="1")) == b'{"type":"ping","id":"1"}'
    assert msgspec.json.decode(encode(SERVER_FRAMES[1])) == {
        "type": "result",
        "id": "2",
        "data": {"kind": "pong"},
    }


def test_frames_nest_at_most_max_nesting_deep() -> None:
    """The decoder's depth limit is documented (``limits.MAX_NESTING``): a frame that deep is
    read; one past ``MAX_NESTING_READ`` is ``malformed_frame`` (without its id: it is not read
    that far)."""
    from protocol.limits import MAX_NESTING

    def notice(depth: int) -> bytes:
        arrays = depth - 2  # the frame's object and the payload's
        head = b'{"type":"notice","notice":"n","merchant":"m","kind":"k","payload":{"a":'
        return head + b"[" * arrays + b"]" * arrays + b"}}"

    from protocol.limits import MAX_NESTING_READ

    assert decode_server(notice(MAX_NESTING)).kind == "k"
    with pytest.raises(DecodeError) as info:
        decode_server(notice(MAX_NESTING_READ))
    assert info.value.code is ErrorCode.MALFORMED_FRAME


def test_a_command_with_a_field_it_does_not_define_is_refused() -> None:
    """A sale carrying ``at`` (a time the register believes it sent) is refused, not accepted
    with the field dropped."""
    err = _error('{"type":"sale","id":"s1","op":"o1","member":"m1","total":100,"at":1}')
    assert (err.code, err.request_id) == (ErrorCode.INVALID_FIELD, "s1")
    assert "at" in err.message


def test_every_error_frame_carries_its_id_and_retryable() -> None:
    frame = msgspec.json.decode(encode(Error(code="invalid_field", message="m")))
    assert frame == {
        "type": "error",
        "code": "invalid_field",
        "message": "m",
        "id": None,
        "retryable": False,
    }
    notice = msgspec.json.decode(encode(Notice(notice="n", merchant="m", kind="k")))
    assert notice["payload"] == {}
