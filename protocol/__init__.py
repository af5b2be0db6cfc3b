"""The loyalty gateway's wire contract (protocol v1).

Pure data and pure functions: msgspec Structs for every frame, the error and close codes, the
version negotiation rule, and a sans-I/O client session helper. It imports no asyncio, aiohttp,
redis or asyncpg, and needs msgspec only. It ships in the ``loyalty-client`` distribution
(clients/python, with the asyncio client), so POS vendors and app teams depend on that alone,
never on the server's.
"""

from protocol.codec import DecodeError, decode_client, decode_server, encode
from protocol.codes import CloseCode, ErrorCode, close_should_reconnect
from protocol.version import PROTOCOL_VERSION, SUPPORTED_VERSIONS, negotiate

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "CloseCode",
    "DecodeError",
    "ErrorCode",
    "close_should_reconnect",
    "decode_client",
    "decode_server",
    "encode",
    "negotiate",
]
