"""What a sans-I/O client session (``client.ClientSession``) makes of the frames it receives:
one event each, for the application."""

from dataclasses import dataclass

from protocol.codes import ErrorCode
from protocol.messages import Balance, BalanceChanged, ClientFrame, Error, ResultData, Welcome


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
    """A balance change, in version order (from a push or a ``subscribed`` reply's ``missed``),
    or ``filled``: one of the versions a :class:`Gap` reported missing, now recovered (older
    than the last version seen, and not a duplicate)."""

    change: BalanceChanged
    filled: bool = False


@dataclass(frozen=True, slots=True)
class Gap:
    """Versions ``expected`` to ``got - 1`` of ``member`` were never seen. The change at ``got``
    is still applied (a :class:`Changed` follows). Re-subscribe (:meth:`ClientSession.refill`
    builds the frame, from before the first missing version): the missing changes then come as
    ``Changed(filled=True)``; or refetch history."""

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
    from a newer protocol version (expected, harmless); anything else is a server bug.
    ``request``: the pending command a ``result`` or ``error`` frame answered, when its id could
    still be read (it is no longer pending; ask for the outcome of its ``op`` if it had one)."""

    code: ErrorCode
    message: str
    request: ClientFrame | None = None


@dataclass(frozen=True, slots=True)
class Pushed:
    """Any other server push (presence, notices, tier changes): for the application."""

    frame: object


Event = Welcomed | Reply | Failed | Changed | Gap | Stale | Resync | Ignored | Pushed
