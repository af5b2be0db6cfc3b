"""The asyncio client of the loyalty gateway (protocol v1), for POS vendors and app back ends.

::

    async with Client(["http://gw-1:8080", "http://gw-2:8080"], get_token, journal="ops.db") as c:
        member = await c.enrol(phone="+14155552671")
        receipt = await c.sale(member.member, 4250)
        async for event in c.events(): ...

``Client`` runs on ``protocol.client.ClientSession`` (the sans-I/O protocol state, shipped in
this distribution with the rest of the ``protocol`` package). See clients/python/README.md.
"""

from loyalty_client.backoff import Backoff
from loyalty_client.client import Client, scope_key
from loyalty_client.errors import (
    ClientClosed,
    CommandError,
    ConnectionClosed,
    ConnectionLost,
    LoyaltyError,
    OutcomeUnknown,
    ProtocolError,
    RequestTimeout,
)
from loyalty_client.events import (
    Changed,
    ClientEvent,
    Connected,
    Disconnected,
    Failed,
    Gap,
    Ignored,
    Pushed,
    Resync,
    Settled,
)
from loyalty_client.journal import Entry, Journal, MemoryJournal, SqliteJournal
from loyalty_client.tokens import TokenProvider, token_expiry

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Changed",
    "Client",
    "ClientClosed",
    "ClientEvent",
    "CommandError",
    "Connected",
    "ConnectionClosed",
    "ConnectionLost",
    "Disconnected",
    "Entry",
    "Failed",
    "Gap",
    "Ignored",
    "Journal",
    "LoyaltyError",
    "MemoryJournal",
    "OutcomeUnknown",
    "ProtocolError",
    "Pushed",
    "RequestTimeout",
    "Resync",
    "Settled",
    "SqliteJournal",
    "TokenProvider",
    "scope_key",
    "token_expiry",
]
