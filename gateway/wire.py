"""How the gateway writes onto the wire what every package sends: server websocket frames (the
same bytes for every receiver) and instants (milliseconds since the epoch, as every frame
carries them). Pure functions, below every other gateway package."""

from __future__ import annotations

import struct
from datetime import datetime

_LEN1 = struct.Struct("!BB").pack
_LEN2 = struct.Struct("!BBH").pack
_LEN3 = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """An unmasked (server-to-client) websocket text frame holding ``payload``."""
    n = len(payload)
    if n < 126:
        return _LEN1(0x81, n) + payload
    if n < 65536:
        return _LEN2(0x81, 126, n) + payload
    return _LEN3(0x81, 127, n) + payload


def epoch_ms(at: datetime) -> int:
    """An instant as the protocol writes it: whole milliseconds since the Unix epoch."""
    return int(at.timestamp() * 1000)
