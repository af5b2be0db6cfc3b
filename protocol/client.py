"""A sans-I/O client session: builds command frames and makes sense of server frames.

Like the ``protocol`` layer of python-websockets, :class:`ClientSession` owns no socket, no
timer and no event loop. The application moves bytes; the session turns commands into frames
(``hello()``, ``sale()`` ... return the bytes to send) and received frames into events
(``receive(data)`` returns a list of :data:`Event`).

What it keeps:

* request ids (``"<prefix><n>"`` from a counter) and the pending command of each, so replies
  come back with the request they answer;
* per member, the last balance version seen (``last_versions``), from ``balance_changed``
  pushes, ``subscribed`` replies and any balance inside a result. A push that skips versions
  yields :class:`Gap`; a push at or below the last version is dropped as :class:`Stale`;
* the members subscribed, so after a reconnect :meth:`ClientSession.resume` re-subscribes each
  with ``since`` = last version and the server sends what was missed.

Typical loop::

    session = ClientSession()
    ws.send(session.hello(token))
    for event in session.receive(ws.recv()): ...
    # on close:
    if session.should_reconnect(code):
        lost = session.connection_lost()       # pending commands, to retry() after resume
        ... reconnect, send hello, wait for Welcomed ...
        for frame in session.resume(): ws.send(frame)
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import msgspec

from protocol.codec import DecodeError, decode_client, decode_server, encode
from protocol.codes import ErrorCode, close_should_reconnect
from protocol.limits import HOLD_TTL_DEFAULT_MS, REQUEST_ID_PATTERN
from protocol.messages import (
    Balance,
    BalanceChanged,
    ClientFrame,
    Commit,
    Error,
    GetBalance,
    GetOutcome,
    Hello,
    HoldState,
    Outcome,
    Ping,
    Release,
    Reserve,
    Result,
    ResultData,
    Sale,
    SaleLine,
    SaleReceipt,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
)
from protocol.messages import Resync as ResyncFrame
from protocol.version import SUPPORTED_VERSIONS

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The server accepted ``hello``: the session is authenticated at ``welcome.version``."""

    welcome: Welcome


@dataclass(frozen=True, slots=True)
class Reply:
    """A ``result`` frame. ``request`` is the command it answers, or ``None`` if its id is not
    pending (for example a reply that raced a reconnect)."""

    request: ClientFrame | None
    data: ResultData


@dataclass(frozen=True, slots=True)
class Failed:
    """An ``error`` frame, with the command it answers when the server could read its id."""

    request: ClientFrame | None
    error: Error

    @property
    def retryable(self) -> bool:
        """Whether resending the same command (:meth:`ClientSession.retry`) may succeed."""
        return self.error.retryable


@dataclass(frozen=True, slots=True)
class Changed:
    """A balance change, in version order (from a push or a ``subscribed`` reply's ``missed``)."""

    change: BalanceChanged


@dataclass(frozen=True, slots=True)
class Gap:
    """Versions ``expected`` to ``got - 1`` of ``member`` were never seen. The change at ``got``
    is still applied (a :class:`Changed` follows); re-subscribe, or refetch history."""

    member: str
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class Stale:
    """A change at ``version`` was dropped: ``last`` (at least as new) was already seen."""

    member: str
    version: int
    last: int


@dataclass(frozen=True, slots=True)
class Resync:
    """``balance`` is the current truth for ``member``; history since the last version seen
    is lost (a ``resync`` frame, or a ``subscribed`` reply with ``recovered=false``)."""

    member: str
    balance: Balance
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A server frame that was not understood. ``code`` is ``unknown_type`` for a frame type
    from a newer protocol version (expected, harmless); anything else is a server bug."""

    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Pushed:
    """Any other server push (presence, notices, tier changes): for the application."""

    frame: object


Event = Welcomed | Reply | Failed | Changed | Gap | Stale | Resync | Ignored | Pushed

# --------------------------------------------------------------------------- session

#: Leaves room for a 20-digit counter within the 64-character request id.
_MAX_PREFIX = 44


class ClientSession:
    """Client-side protocol state for one logical session, across reconnects.

    Args:
        prefix: prepended to every request id (e.g. a terminal id, to read logs); ids are
            ``f"{prefix}{n}"``, so the prefix uses the id charset and has at most 44 characters.

    Builders validate the frame as the server would and raise :class:`DecodeError`
    (``invalid_field``) for one the server would refuse; nothing is then registered.
    """

    def __init__(self, prefix: str = "") -> None:
        if len(prefix) > _MAX_PREFIX or (prefix and not re.search(REQUEST_ID_PATTERN, prefix)):
            raise ValueError(f"request id prefix {prefix!r} is not a valid id of <= {_MAX_PREFIX}")
        self._prefix = prefix
        self._counter = 0
        self._pending: dict[str, ClientFrame] = {}
        self._versions: dict[str, int] = {}
        self._subscriptions: set[str] = set()
        self.welcome: Welcome | None = None
        """The current connection's ``welcome``, or ``None`` before it (and after a loss)."""

    # ----------------------------------------------------------------- state

    @property
    def last_versions(self) -> Mapping[str, int]:
        """Last balance version seen per member (read-only view)."""
        return MappingProxyType(self._versions)

    @property
    def pending(self) -> Mapping[str, ClientFrame]:
        """Commands sent and not yet answered, by request id (read-only view)."""
        return MappingProxyType(self._pending)

    @property
    def subscriptions(self) -> frozenset[str]:
        """Members whose ``subscribe`` succeeded and that were not unsubscribed since."""
        return frozenset(self._subscriptions)

    @staticmethod
    def should_reconnect(close_code: int) -> bool:
        """Whether to reconnect (with jittered backoff) after the server closed with this code."""
        return close_should_reconnect(close_code)

    def connection_lost(self) -> list[ClientFrame]:
        """Forget the connection: returns the unanswered commands, oldest first.

        Their outcome is unknown. Mutating ones carry an ``op``: :meth:`retry` them after
        reconnecting (the server answers a repeated ``op`` with the original outcome), or ask
        with :meth:`outcome`. Versions and subscriptions are kept for :meth:`resume`.
        """
        lost = list(self._pending.values())
        self._pending.clear()
        self.welcome = None
        return lost

    # ----------------------------------------------------------------- builders

    def send(self, frame: ClientFrame) -> bytes:
        """Validate, register as pending, and encode ``frame`` (its ``id`` must be unused)."""
        if frame.id in self._pending:
            raise ValueError(f"request id {frame.id!r} is already pending")
        data = encode(frame)
        decode_client(data)  # raises DecodeError exactly as the server would refuse it
        self._pending[frame.id] = frame
        return data

    def next_id(self) -> str:
        """A fresh request id."""
        self._counter += 1
        return f"{self._prefix}{self._counter}"

    def retry(self, frame: ClientFrame) -> bytes:
        """Send ``frame`` again under a new request id (same ``op``, same content)."""
        self._pending.pop(frame.id, None)
        return self.send(msgspec.structs.replace(frame, id=self.next_id()))

    def hello(
        self, token: str, versions: Iterable[int] = SUPPORTED_VERSIONS, client: str = ""
    ) -> bytes:
        return self.send(
            Hello(id=self.next_id(), versions=list(versions), token=token, client=client)
        )

    def ping(self) -> bytes:
        return self.send(Ping(id=self.next_id()))

    def subscribe(self, member: str, since: int | None = None) -> bytes:
        """Watch ``member``; with ``since``, the reply carries the changes after it."""
        return self.send(Subscribe(id=self.next_id(), member=member, since=since))

    def resume(self) -> list[bytes]:
        """Re-subscribe every subscription, each from its last version seen (after reconnect)."""
        return [self.subscribe(m, self._versions.get(m)) for m in sorted(self._subscriptions)]

    def unsubscribe(self, member: str) -> bytes:
        return self.send(Unsubscribe(id=self.next_id(), member=member))

    def balance(self, member: str) -> bytes:
        return self.send(GetBalance(id=self.next_id(), member=member))

    def sale(self, op: str, member: str, total: int, lines: Sequence[SaleLine] = ()) -> bytes:
        """Post a completed purchase. ``op`` must be made once and reused on every retry."""
        frame = Sale(id=self.next_id(), op=op, member=member, total=total, lines=list(lines))
        return self.send(frame)

    def reserve(
        self, op: str, member: str, points: int, ttl_ms: int = HOLD_TTL_DEFAULT_MS
    ) -> bytes:
        """Hold ``points``; the hold's id is ``op``."""
        frame = Reserve(id=self.next_id(), op=op, member=member, points=points, ttl_ms=ttl_ms)
        return self.send(frame)

    def commit(self, op: str, member: str, hold: str, points: int | None = None) -> bytes:
        """Post hold ``hold``: all of it, or ``points`` of it (the rest is released)."""
        frame = Commit(id=self.next_id(), op=op, member=member, hold=hold, points=points)
        return self.send(frame)

    def release(self, op: str, member: str, hold: str) -> bytes:
        return self.send(Release(id=self.next_id(), op=op, member=member, hold=hold))

    def outcome(self, op: str) -> bytes:
        """Ask what became of operation ``op`` (after a timeout or a lost connection)."""
        return self.send(GetOutcome(id=self.next_id(), op=op))

    # ----------------------------------------------------------------- receiving

    def receive(self, data: bytes | str) -> list[Event]:
        """Decode one server frame and return what it means, in order.

        A ``subscribed`` reply yields its :class:`Reply`, then a :class:`Changed` (or
        :class:`Gap`/:class:`Stale`) per missed change, then a :class:`Resync` if the server
        could not recover the changes since ``since``. Never raises for a bad frame: it
        becomes :class:`Ignored`.
        """
        try:
            frame = decode_server(data)
        except DecodeError as exc:
            return [Ignored(exc.code, exc.message)]
        events: list[Event] = []
        if isinstance(frame, BalanceChanged):
            self._on_change(frame, events)
        elif isinstance(frame, ResyncFrame):
            self._versions[frame.member] = frame.balance.version
            events.append(Resync(frame.member, frame.balance, frame.reason))
        elif isinstance(frame, Welcome):
            self._pending.pop(frame.id, None)
            self.welcome = frame
            events.append(Welcomed(frame))
        elif isinstance(frame, Error):
            request = self._pending.pop(frame.id, None) if frame.id is not None else None
            events.append(Failed(request, frame))
        elif isinstance(frame, Result):
            self._on_result(frame, events)
        else:
            events.append(Pushed(frame))
        return events

    def _on_result(self, frame: Result, events: list[Event]) -> None:
        request = self._pending.pop(frame.id, None)
        data = frame.data
        events.append(Reply(request, data))
        if isinstance(data, Subscribed):
            self._on_subscribed(data, request, events)
        elif isinstance(data, Unsubscribed):
            self._subscriptions.discard(data.member)
        else:
            self._note_balances(data)

    def _on_subscribed(
        self, data: Subscribed, request: ClientFrame | None, events: list[Event]
    ) -> None:
        self._subscriptions.add(data.member)
        since = request.since if isinstance(request, Subscribe) else None
        if data.member not in self._versions and since is not None:
            self._versions[data.member] = since  # the missed changes start after it
        for change in data.missed:
            self._on_change(change, events)
        if not data.recovered:
            self._versions[data.member] = data.balance.version
            events.append(Resync(data.member, data.balance, "not_recovered"))
        else:
            self._advance(data.balance)

    def _on_change(self, change: BalanceChanged, events: list[Event]) -> None:
        last = self._versions.get(change.member)
        if last is not None and change.version <= last:
            events.append(Stale(change.member, change.version, last))
            return
        if last is not None and change.version > last + 1:
            events.append(Gap(change.member, last + 1, change.version))
        self._versions[change.member] = change.version
        events.append(Changed(change))

    def _advance(self, balance: Balance) -> None:
        """A snapshot moves the last version forward, never back (it reports no gap)."""
        if balance.version > self._versions.get(balance.member, -1):
            self._versions[balance.member] = balance.version

    def _note_balances(self, data: ResultData | None) -> None:
        if isinstance(data, Balance):
            self._advance(data)
        elif isinstance(data, SaleReceipt | HoldState) and data.balance is not None:
            self._advance(data.balance)
        elif isinstance(data, Outcome):
            self._note_balances(data.data)
