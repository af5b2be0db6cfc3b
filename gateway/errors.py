"""One root exception and a small tree; each carries a stable protocol ``ErrorCode``.

Store adapters translate redis/asyncpg errors into these where they enter (``store/``), so no
driver exception travels deeper than the adapter.
"""

from protocol.codes import ErrorCode


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message or self.code.description)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def retryable(self) -> bool:
        return self.code.retryable


class Refused(GatewayError):
    """A request the domain refuses (bad amount, unknown member, ...); nothing was applied."""


class Forbidden(GatewayError):
    code = ErrorCode.FORBIDDEN


class AuthError(GatewayError):
    code = ErrorCode.TOKEN_INVALID


class StoreUnavailable(GatewayError):
    """PostgreSQL or Redis did not answer; retry with the same operation id."""

    code = ErrorCode.UNAVAILABLE


class OutcomeUnknown(GatewayError):
    """The commit may or may not have happened (connection lost during COMMIT)."""

    code = ErrorCode.TIMEOUT


class Undelivered(StoreUnavailable):
    """A message (an email, an SMS) not handed over; ``permanent``: trying again will not
    change that (an SMTP 5xx reply, an HTTP 4xx), else it may (an SMTP 4xx, no connection,
    an HTTP 5xx). Raised by ``gateway.notify``'s senders."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent
