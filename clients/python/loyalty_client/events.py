"""What ``Client.events()`` yields: the protocol's events (``protocol.events``: ``Changed``,
``Gap``, ``Resync``, ``Pushed``, ``Ignored``, and ``Failed`` for an error frame no command
awaits) and the connection's own (``Connected``, ``Disconnected``, ``Settled``)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.events import Changed, Failed, Gap, Ignored, Pushed, Resync
from protocol.messages import ClientFrame, Error, ResultData, Welcome


@dataclass(frozen=True, slots=True)
class Connected:
    """A session was welcomed. ``resumed``: not the first one of this client; its
    subscriptions were re-subscribed from their last versions (the missed changes follow as
    ``Changed``, or a ``Resync``), and the commands still unanswered were sent again. A view
    that is not only a balance (a wallet, a cashier view) should be fetched again."""

    welcome: Welcome
    url: str
    resumed: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended with ``code`` (``None``: dropped without a close frame; the client
    counts it as 1006). ``reconnect``: the client is coming back (after ``delay`` seconds);
    otherwise it stopped (a terminal close code, or ``close()``)."""

    code: int | None
    reconnect: bool
    delay: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Settled:
    """An operation whose outcome was unknown (from the journal after a restart, or given up
    by its caller: a timeout, a cancellation) is settled: the server answered its ``op`` with
    ``data`` (it is applied, once) or with ``error`` (refused; nothing applied)."""

    op: str
    command: ClientFrame
    data: ResultData | None = None
    error: Error | None = None


ClientEvent = (
    Connected | Disconnected | Settled | Changed | Gap | Resync | Pushed | Ignored | Failed
)
"""Everything ``Client.events()`` may yield."""

__all__ = [
    "Changed",
    "ClientEvent",
    "Connected",
    "Disconnected",
    "Failed",
    "Gap",
    "Ignored",
    "Pushed",
    "Resync",
    "Settled",
]
