"""What an awaited command raises. Every error carries what to do next: the stable ``code``
and ``retryable`` of the protocol (``protocol.codes.ErrorCode``), or whether the outcome of an
operation is still unknown (and being settled)."""

from __future__ import annotations

from protocol.codes import ErrorCode
from protocol.messages import ClientFrame, Error


class LoyaltyError(Exception):
    """Base of every error this client raises."""


class CommandError(LoyaltyError):
    """The server answered the command with an ``error`` frame (``error``).

    ``code`` is the stable error code (an :class:`~protocol.codes.ErrorCode` when this client
    knows it, else the string the server sent), ``retryable`` whether sending the same command
    again (same ``op``) may succeed later. A command error is a definitive answer: the client
    forgets the operation (its journal entry is removed), except a retryable one after an
    attempt whose outcome was unknown, which raises :class:`OutcomeUnknown` instead.
    """

    def __init__(self, error: Error, request: ClientFrame | None = None) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.code: ErrorCode | str = (
            ErrorCode(error.code) if error.code in ErrorCode._value2member_map_ else error.code
        )
        self.message = error.message
        self.retryable = error.retryable
        self.request = request


class OutcomeUnknown(LoyaltyError):
    """The operation ``op`` was sent (or may have been), and no definitive answer came within
    the command's attempts. It stays in the journal: the client keeps sending it again with the
    same ``op`` (on every reconnect, and every ``settle_interval``) until the server answers,
    then reports a :class:`~loyalty_client.events.Settled` event. It is applied at most once;
    never ring it up again under a new ``op``."""

    def __init__(self, op: str, reason: str) -> None:
        super().__init__(f"outcome of {op!r} unknown ({reason}); it is being settled")
        self.op = op
        self.reason = reason
        self.retryable = True


class RequestTimeout(LoyaltyError):
    """A command without an ``op`` (a read) got no reply within its attempts."""

    retryable = True


class ConnectionLost(LoyaltyError):
    """The connection was lost while a command that must not be sent twice (``verify_contact``,
    ``refresh``) awaited its reply: its outcome is unknown."""

    retryable = True


class ConnectionClosed(LoyaltyError):
    """The server closed the session with a terminal close code (3500-3999 but 3501): the
    client does not reconnect until the cause is fixed (a valid token, an upgraded client).
    Operations in the journal stay there for a later client to settle."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed with {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
        self.retryable = False


class ClientClosed(LoyaltyError):
    """The client was closed (``Client.close()``) before the command was answered."""

    retryable = False


class ProtocolError(LoyaltyError):
    """The server's reply could not be understood (a newer server, or a reply of another kind
    than the command's)."""

    retryable = False
