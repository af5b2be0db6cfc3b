"""Protocol versions and the negotiation rule.

A client lists every version it speaks in ``hello.versions``. The server picks the highest
version both sides support. If there is none, it answers ``error`` code ``unsupported_version``
(listing what it supports) and closes with ``CloseCode.UNSUPPORTED_VERSION`` (do not reconnect
until upgraded). Within one major version the server only ever *adds* optional fields and new
message types; clients must ignore fields they do not know, and must treat an unknown server
message ``type`` as ignorable.
"""

from collections.abc import Iterable

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)


def negotiate(client_versions: Iterable[int]) -> int | None:
    """Return the highest version both sides support, or ``None``."""
    common = set(client_versions).intersection(SUPPORTED_VERSIONS)
    return max(common) if common else None
