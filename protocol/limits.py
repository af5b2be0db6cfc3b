"""Documented bounds that the decoder enforces on every frame.

These are part of the contract: a frame outside them is refused with ``invalid_field``
before any state is touched.
"""

from typing import Annotated

import msgspec

#: Largest number of points one operation may move (earn, reserve, commit, return ...).
MAX_POINTS = 10_000_000
#: Largest sale total, in minor currency units: 100 million = 1,000,000.00 USD (cents),
#: 100,000,000 JPY (no minor unit), 100,000.000 KWD (fils).
MAX_MINOR_UNITS = 100_000_000
#: Identifiers (members, operations, holds, stores, terminals, merchants): 1-64 characters from
#: ``A-Z a-z 0-9 _ - . :``. (The ``(?!\n)`` matters: msgspec matches with Python's ``re.search``,
#: whose ``$`` also matches before a trailing newline, so ``"m1\n"`` would otherwise pass.)
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$(?!\n)"
ID_MAX_LEN = 64
#: Request ids correlate replies; same charset, up to 64 characters.
REQUEST_ID_PATTERN = ID_PATTERN
#: Hold time-to-live bounds in milliseconds (1 second to 1 hour); default 120 s.
HOLD_TTL_MIN_MS = 1_000
HOLD_TTL_MAX_MS = 3_600_000
HOLD_TTL_DEFAULT_MS = 120_000
#: Auth tokens are opaque strings up to 4 KiB.
TOKEN_MAX_LEN = 4096
#: Sale line items per sale.
MAX_LINES = 200
#: Free text (product names, messages) limit.
TEXT_MAX_LEN = 200
#: Largest version number (balance versions, protocol versions): a signed 64-bit integer.
MAX_VERSION = 2**63 - 1
#: Largest frame, in bytes, that the protocol accepts; larger frames get ``frame_too_large`` and
#: the session continues. (The transport has its own, larger, hard limit that closes the socket.)
MAX_FRAME_BYTES = 65_536

#: Nesting of JSON containers (the frame's own object included) every frame may hold. The JSON
#: decoder stops at Python's recursion limit, somewhat under 1,000 levels and less the deeper
#: the decoding call already is: a frame nested past it is ``malformed_frame``, without its
#: request id (the frame is not read that far). No command nests deeper than 4.
MAX_NESTING = 500
#: Nesting past which no frame is ever read.
MAX_NESTING_READ = 1000

Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=ID_MAX_LEN)]
RequestId = Annotated[str, msgspec.Meta(pattern=REQUEST_ID_PATTERN, max_length=ID_MAX_LEN)]
Points = Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)]
MinorUnits = Annotated[int, msgspec.Meta(ge=0, le=MAX_MINOR_UNITS)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
TtlMs = Annotated[int, msgspec.Meta(ge=HOLD_TTL_MIN_MS, le=HOLD_TTL_MAX_MS)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=TOKEN_MAX_LEN)]
#: Free text holds no NUL (PostgreSQL text cannot store one).
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX_LEN, pattern="^[^\\x00]*$")]
Version = Annotated[int, msgspec.Meta(ge=0, le=MAX_VERSION)]

#: The most targeted offers one sale presents.
MAX_PRESENTED_OFFERS = 10
