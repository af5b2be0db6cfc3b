"""Encoding and validating decoding of frames.

``decode_client`` is the only way bytes become commands on the server. For any input it either
returns a ``ClientFrame`` or raises :class:`DecodeError` carrying a stable ``ErrorCode`` and,
when it could be read, the request id, so the error frame can still be correlated.
"""

from typing import Any

import msgspec

from protocol.codes import ErrorCode
from protocol.limits import MAX_FRAME_BYTES
from protocol.messages import SALE_MAX_LINES, ClientFrame, Sale, ServerFrame


class DecodeError(Exception):
    """The only exception ``decode_client``/``decode_server`` raise."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


class _Envelope(msgspec.Struct):
    type: str | None = None
    id: str | None = None


_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()
_CLIENT_TYPES = frozenset(
    getattr(t, "__struct_config__").tag for t in ClientFrame.__args__  # type: ignore[attr-defined]
)


def encode(frame: Any) -> bytes:
    """Encode a frame (or any msgspec-encodable value) to JSON bytes."""
    return _encoder.encode(frame)


def _envelope(data: bytes | str) -> _Envelope | None:
    try:
        return _envelope_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def decode_client(data: bytes | str) -> ClientFrame:
    """Decode and validate one client frame."""
    if len(data) > MAX_FRAME_BYTES:
        raise DecodeError(ErrorCode.FRAME_TOO_LARGE, f"frame exceeds {MAX_FRAME_BYTES} bytes")
    try:
        frame = _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        env = _envelope(data)
        if env is None:
            raise DecodeError(ErrorCode.MALFORMED_FRAME, "frame is not a protocol object") from None
        type_, rid = env.type, (env.id if env.id and len(env.id) <= 64 else None)
        if type_ is None:
            raise DecodeError(ErrorCode.MALFORMED_FRAME, "frame has no `type`", rid) from None
        if type_ is not None and type_ not in _CLIENT_TYPES:
            raise DecodeError(ErrorCode.UNKNOWN_TYPE, f"unknown type {type_[:40]!r}", rid) from None
        raise DecodeError(ErrorCode.INVALID_FIELD, str(exc), rid) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise DecodeError(ErrorCode.MALFORMED_FRAME, "frame is not valid JSON") from None
    if isinstance(frame, Sale) and len(frame.lines) > SALE_MAX_LINES:
        raise DecodeError(
            ErrorCode.INVALID_FIELD, f"a sale has at most {SALE_MAX_LINES} lines", frame.id
        )
    return frame


def decode_server(data: bytes | str) -> ServerFrame:
    """Decode one server frame (for clients, load generators and tests)."""
    try:
        return _server_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        raise DecodeError(ErrorCode.MALFORMED_FRAME, "not a server frame") from None
