"""Stable error codes and websocket close codes. Every code is documented here, once.

Error codes travel in ``error`` frames (``code``, ``retryable``, ``message``) and never change
meaning. ``retryable`` tells the client whether sending the *same* request again (same operation
id) may succeed later; a non-retryable error will keep failing until the request changes.

Close codes follow the Centrifugo split (learned from it and from Pusher's 4000/4100/4200):

* ``3000-3499`` transient: reconnect, with jittered exponential backoff (the server may name a
  different node to use by failing readiness; any node will do).
* ``3500-3999`` terminal: do **not** reconnect until the cause is fixed (a new token, an
  upgraded client, a corrected frame).
* ``1000``/``1001`` are the standard normal/going-away codes; ``1009`` is the transport's hard
  frame limit. Anything else: reconnect with backoff.
"""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    # -- transport and framing (the session survives) --
    MALFORMED_FRAME = "malformed_frame"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    # -- authentication and authorisation --
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    # -- limits --
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    MEMBER_SESSIONS_FULL = "member_sessions_full"
    # -- server side, temporary --
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    DRAINING = "draining"
    # -- ledger --
    MEMBER_NOT_FOUND = "member_not_found"
    INSUFFICIENT_POINTS = "insufficient_points"
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_NOT_ACTIVE = "hold_not_active"
    HOLD_EXPIRED = "hold_expired"
    COMMIT_EXCEEDS_HOLD = "commit_exceeds_hold"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    OPERATION_NOT_FOUND = "operation_not_found"
    MEMBER_MERGED = "member_merged"
    # -- loyalty domain --
    IDENTITY_INVALID = "identity_invalid"
    SALE_NOT_FOUND = "sale_not_found"
    RETURN_EXCEEDS_SALE = "return_exceeds_sale"
    REDEMPTION_OF_ANOTHER_SALE = "redemption_of_another_sale"
    REWARD_NOT_FOUND = "reward_not_found"
    REWARD_NOT_ELIGIBLE = "reward_not_eligible"
    CODE_NOT_FOUND = "code_not_found"
    CODE_ALREADY_REDEEMED = "code_already_redeemed"
    CODE_EXPIRED = "code_expired"
    CODE_VOIDED = "code_voided"
    # the wallet
    VERIFICATION_FAILED = "verification_failed"
    IDENTITY_IN_USE = "identity_in_use"
    TIME_ZONE_UNKNOWN = "time_zone_unknown"
    OFFER_NOT_ELIGIBLE = "offer_not_eligible"

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def description(self) -> str:
        return ERROR_DESCRIPTIONS[self]


_RETRYABLE = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.MEMBER_SESSIONS_FULL,
        ErrorCode.INTERNAL,
        ErrorCode.UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.DRAINING,
    }
)

ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.MALFORMED_FRAME: "The frame is not a JSON object of the protocol.",
    ErrorCode.UNKNOWN_TYPE: "The frame's `type` names no client command of this version.",
    ErrorCode.INVALID_FIELD: "A field is missing, of the wrong type, or outside its bounds.",
    ErrorCode.FRAME_TOO_LARGE: "The frame exceeds MAX_FRAME_BYTES; it was not read.",
    ErrorCode.UNSUPPORTED_VERSION: "No protocol version in common; upgrade the client.",
    ErrorCode.NOT_AUTHENTICATED: "Send `hello` with a valid token before any other command.",
    ErrorCode.ALREADY_AUTHENTICATED: "`hello` was already accepted on this session.",
    ErrorCode.TOKEN_INVALID: "The token is malformed, has a bad signature, or lacks its scope.",
    ErrorCode.TOKEN_EXPIRED: "The token has expired; obtain a new one.",
    ErrorCode.FORBIDDEN: (
        "The member, hold or operation is outside this session's scope (an app reaching another"
        " member, an app changing points). Another merchant's member is `member_not_found`, as"
        " an unknown one."
    ),
    ErrorCode.RATE_LIMITED: "Too many commands on this session; slow down and retry.",
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: "The session watches the maximum number of members.",
    ErrorCode.MEMBER_SESSIONS_FULL: (
        "The member has the most app/web sessions allowed open (on every node); close one."
        " Answers the `hello`, then the session is closed with 3004."
    ),
    ErrorCode.INTERNAL: "Unexpected server error; nothing was applied; retry with the same id.",
    ErrorCode.UNAVAILABLE: "A backing store is unavailable; retry with the same id.",
    ErrorCode.TIMEOUT: "The operation's outcome is not known yet; retry with the same id.",
    ErrorCode.DRAINING: "This node is shutting down; reconnect elsewhere and retry.",
    ErrorCode.MEMBER_NOT_FOUND: "No member with that id in this merchant's programme.",
    ErrorCode.INSUFFICIENT_POINTS: "Available points are lower than the amount requested.",
    ErrorCode.HOLD_NOT_FOUND: "No hold with that id for this member.",
    ErrorCode.HOLD_NOT_ACTIVE: "The hold was already committed or released.",
    ErrorCode.HOLD_EXPIRED: (
        "The hold passed its expiry: its points are available again, and it can no longer be"
        " committed or released."
    ),
    ErrorCode.COMMIT_EXCEEDS_HOLD: "The commit amount is larger than the held amount.",
    ErrorCode.IDEMPOTENCY_CONFLICT: "The operation id was used before with different content.",
    ErrorCode.OPERATION_NOT_FOUND: (
        "No operation with that id is recorded (yet: send the command again with the same op"
        " to settle it)."
    ),
    ErrorCode.MEMBER_MERGED: (
        "The member was merged into another one (named in the message); use that member."
    ),
    ErrorCode.IDENTITY_INVALID: "The phone number, email or card is not valid.",
    ErrorCode.SALE_NOT_FOUND: "No sale with that id for this member.",
    ErrorCode.RETURN_EXCEEDS_SALE: "The return is larger than what remains of the sale.",
    ErrorCode.REDEMPTION_OF_ANOTHER_SALE: (
        "The redemption's points are restored through returns of another sale (named)."
    ),
    ErrorCode.REWARD_NOT_FOUND: "No reward with that id in this programme.",
    ErrorCode.REWARD_NOT_ELIGIBLE: "The member's tier may not redeem this reward.",
    ErrorCode.CODE_NOT_FOUND: "No such code in this programme.",
    ErrorCode.CODE_ALREADY_REDEEMED: "The code was already redeemed.",
    ErrorCode.CODE_EXPIRED: "The code has expired.",
    ErrorCode.CODE_VOIDED: "The code was voided.",
    ErrorCode.VERIFICATION_FAILED: (
        "The verification code is wrong, expired or already used, or was tried too often;"
        " ask for a new one (`verify_contact`)."
    ),
    ErrorCode.IDENTITY_IN_USE: "The email or phone number already identifies another member.",
    ErrorCode.TIME_ZONE_UNKNOWN: (
        "No IANA time zone of that name (`Europe/Paris`, `America/New_York`, `UTC`)."
    ),
    ErrorCode.OFFER_NOT_ELIGIBLE: (
        "A presented offer does not apply to this sale (unknown, withdrawn, outside its window"
        " or channel, not targeted at the member, its limits used up, or the sale lacks its"
        " SKU or category); nothing was applied. Ring the sale again without it."
    ),
}


class CloseCode(IntEnum):
    # 3000-3499: transient, reconnect with backoff
    DRAINING = 3000
    """The node is shutting down (deploy, scale-in); reconnect now, to any node."""
    INTERNAL = 3001
    """Unexpected server error; reconnect with backoff."""
    NODE_FULL = 3002
    """The node holds its maximum number of sessions; reconnect with backoff (another node)."""
    HEARTBEAT_TIMEOUT = 3003
    """No traffic from the client within the heartbeat timeout."""
    MEMBER_SESSIONS_FULL = 3004
    """The member already has the maximum number of live sessions; retry later (the
    ``hello`` is answered with ``member_sessions_full`` first)."""
    SLOW_CONSUMER = 3008
    """The client did not read fast enough and its outbound queue overflowed; reconnect and
    resume from the last version seen."""
    # 3500-3999: terminal, do not reconnect until fixed
    TOKEN_INVALID = 3500
    """Authentication failed; do not reconnect with the same token."""
    TOKEN_EXPIRED = 3501
    """The token expired; obtain a new token, then reconnect."""
    FORBIDDEN = 3502
    """The credentials are not allowed to connect here."""
    UNSUPPORTED_VERSION = 3503
    """No common protocol version; upgrade the client."""
    AUTH_TIMEOUT = 3504
    """No `hello` within the allowed time after connecting."""
    PROTOCOL_VIOLATION = 3505
    """Too many malformed frames in a row; fix the client."""


def close_should_reconnect(code: int) -> bool:
    """Whether a client should reconnect (with backoff) after the server closed with ``code``."""
    return not 3500 <= code <= 3999
