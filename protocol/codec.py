"""Encoding and validating decoding of frames.

``decode_client`` is the only way bytes become commands on the server. For any input it either
returns a ``ClientFrame`` or raises :class:`DecodeError` carrying a stable ``ErrorCode`` and,
when it could be read, the request id, so the error frame can still be correlated.

Classification of a bad client frame, in order:

* larger than ``MAX_FRAME_BYTES`` (UTF-8 bytes, also for ``str`` input): ``frame_too_large``;
* not JSON, not UTF-8, or not a JSON object: ``malformed_frame``;
* an object without a string ``type``: ``malformed_frame``;
* a ``type`` that names no client command: ``unknown_type``;
* anything else (missing field, wrong type, out of bounds): ``invalid_field``.

The request id is echoed only if the frame's ``id`` is itself a valid request id.
"""

import re
from typing import Any

import msgspec

from protocol.codes import ErrorCode
from protocol.limits import MAX_FRAME_BYTES, REQUEST_ID_PATTERN
from protocol.messages import ClientFrame, ServerFrame


class DecodeError(Exception):
    """The only exception ``decode_client``/``decode_server`` raise."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _Envelope(msgspec.Struct):
    type: Any = None
    id: Any = None


def _tags(union: Any) -> frozenset[str]:
    return frozenset(t.__struct_config__.tag for t in union.__args__)


_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()
_CLIENT_TYPES = _tags(ClientFrame)
_SERVER_TYPES = _tags(ServerFrame)
# msgspec applies ``Meta(pattern=...)`` with ``re.search``; use the same here.
_request_id_re = re.compile(REQUEST_ID_PATTERN)


def encode(frame: Any) -> bytes:
    """Encode a frame (or any msgspec-encodable value) to JSON bytes."""
    return _encoder.encode(frame)


def _as_bytes(data: bytes | str) -> bytes:
    """Return ``data`` as UTF-8 bytes, refusing it if too large or not encodable."""
    if len(data) > MAX_FRAME_BYTES:  # a str's UTF-8 form is never shorter than the str
        raise DecodeError(ErrorCode.FRAME_TOO_LARGE, f"frame exceeds {MAX_FRAME_BYTES} bytes")
    if isinstance(data, str):
        try:
            data = data.encode()
        except UnicodeEncodeError:  # lone surrogates
            raise DecodeError(ErrorCode.MALFORMED_FRAME, "frame is not valid UTF-8") from None
        if len(data) > MAX_FRAME_BYTES:
            raise DecodeError(ErrorCode.FRAME_TOO_LARGE, f"frame exceeds {MAX_FRAME_BYTES} bytes")
    return bytes(data)


def _envelope(data: bytes) -> tuple[str | None, str | None] | None:
    """The frame's ``type`` (if a string) and request id (if valid), or None if not an object."""
    try:
        env = _envelope_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return None
    type_ = env.type if isinstance(env.type, str) else None
    rid = env.id if isinstance(env.id, str) and _request_id_re.search(env.id) else None
    return type_, rid


def _classify(data: bytes, exc: msgspec.ValidationError, known: frozenset[str]) -> DecodeError:
    env = _envelope(data)
    if env is None:
        return DecodeError(ErrorCode.MALFORMED_FRAME, "frame is not a JSON object")
    type_, rid = env
    if type_ is None:
        return DecodeError(ErrorCode.MALFORMED_FRAME, "frame has no string `type`", rid)
    if type_ not in known:
        return DecodeError(ErrorCode.UNKNOWN_TYPE, f"unknown type {type_[:40]!r}", rid)
    return DecodeError(ErrorCode.INVALID_FIELD, str(exc), rid)


def decode_client(data: bytes | str) -> ClientFrame:
    """Decode and validate one client frame.

    Raises:
        DecodeError: for any input that is not a valid client frame (see the module docstring).
    """
    raw = _as_bytes(data)
    try:
        frame: ClientFrame = _client_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _classify(raw, exc, _CLIENT_TYPES) from None
    except (msgspec.DecodeError, RecursionError):
        raise DecodeError(ErrorCode.MALFORMED_FRAME, "frame is not valid JSON") from None
    except UnicodeDecodeError:  # a binary frame with non-UTF-8 bytes inside a string
        raise DecodeError(ErrorCode.MALFORMED_FRAME, "frame is not valid UTF-8") from None
    return frame


def decode_server(data: bytes | str) -> ServerFrame:
    """Decode one server frame (for clients, load generators and tests).

    Raises:
        DecodeError: ``unknown_type`` for a frame whose ``type`` this version does not know
            (clients must ignore those: later minor versions add types), ``invalid_field`` for
            a known type with bad fields, ``malformed_frame`` for anything else.
    """
    try:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        frame: ServerFrame = _server_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _classify(raw, exc, _SERVER_TYPES) from None
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError, UnicodeDecodeError):
        raise DecodeError(ErrorCode.MALFORMED_FRAME, "not a server frame") from None
    return frame
