"""What the server answers each client command with: the ``result`` data it carries, and the
error codes it may get instead.

``protocol.asyncapi`` makes one operation of each command from this table (its reply: these
``result`` kinds or an ``error``), and the test suite checks every reply a test node sends
against it: a command answered with a kind or a code it does not list fails the test that
caused it.

The codes of a command are the ones its own work can cause. The ones any frame or any command
may get are listed once, below: a frame that does not decode, and the session's and the node's
limits and state.
"""

from typing import Any

from protocol import loyalty as ly
from protocol import messages as m
from protocol import wallet as wl
from protocol.codes import ErrorCode as E

#: A frame that is not a command of this version: answered with its decoding error (its
#: ``id`` when it could be read, else null), and the session goes on (3505 after a run of them,
#: or at once for a first frame).
FRAME_ERRORS = (E.MALFORMED_FRAME, E.UNKNOWN_TYPE, E.INVALID_FIELD, E.FRAME_TOO_LARGE)

#: Any command, whatever it is: before ``welcome`` (``not_authenticated``, then close 3500),
#: once the session's token expired (then close 3501), while the node drains, past the
#: session's rate, or when the node failed unexpectedly (nothing was applied).
COMMAND_ERRORS = (E.NOT_AUTHENTICATED, E.TOKEN_EXPIRED, E.DRAINING, E.RATE_LIMITED, E.INTERNAL)

#: Commands that read or write the stores: PostgreSQL or Redis did not answer in time.
_STORE = (E.UNAVAILABLE,)
#: Commands that reach the ledger with an ``op``: its outcome may be unknown (``timeout``:
#: send it again with the same ``op``), and an ``op`` used for other content is refused.
_LEDGER = (E.UNAVAILABLE, E.TIMEOUT, E.IDEMPOTENCY_CONFLICT)
#: A command naming a member: an app's other member (``forbidden``), or none of the merchant.
_MEMBER = (E.FORBIDDEN, E.MEMBER_NOT_FOUND)


class Reply:
    """A command's answer: ``result`` data of one of ``data``, or an ``error`` with one of
    ``errors`` (or of the codes every command may get)."""

    __slots__ = ("data", "errors")

    def __init__(self, data: tuple[type, ...], errors: tuple[E, ...]) -> None:
        self.data = data
        self.errors = tuple(dict.fromkeys(errors))

    def __repr__(self) -> str:
        return f"Reply({[t.__name__ for t in self.data]}, {[e.value for e in self.errors]})"


_HOLD = (*_MEMBER, *_LEDGER, E.MEMBER_MERGED, E.HOLD_NOT_FOUND, E.HOLD_NOT_ACTIVE, E.HOLD_EXPIRED)
_CODE = (E.FORBIDDEN, E.CODE_NOT_FOUND, E.CODE_ALREADY_REDEEMED, E.CODE_VOIDED)

#: Every client command but ``hello`` (answered with ``welcome``, see ``HELLO_ERRORS``).
REPLIES: dict[type, Reply] = {
    m.Ping: Reply((m.Pong,), ()),
    m.Refresh: Reply((m.Refreshed,), (E.TOKEN_INVALID,)),
    m.Subscribe: Reply((m.Subscribed,), (*_MEMBER, *_STORE, E.TOO_MANY_SUBSCRIPTIONS)),
    m.Unsubscribe: Reply((m.Unsubscribed,), ()),
    m.GetBalance: Reply((m.Balance,), (*_MEMBER, *_STORE)),
    m.Sale: Reply((m.SaleReceipt,), (*_MEMBER, *_LEDGER, E.MEMBER_MERGED, E.OFFER_NOT_ELIGIBLE)),
    m.Reserve: Reply((m.HoldState,), (*_MEMBER, *_LEDGER, E.MEMBER_MERGED, E.INSUFFICIENT_POINTS)),
    m.Commit: Reply((m.HoldState,), (*_HOLD, E.COMMIT_EXCEEDS_HOLD)),
    m.Release: Reply((m.HoldState,), _HOLD),
    m.GetOutcome: Reply((m.Outcome,), (*_STORE, E.OPERATION_NOT_FOUND)),
    ly.Enrol: Reply((ly.Member,), (E.FORBIDDEN, *_STORE, E.IDENTITY_INVALID)),
    ly.Lookup: Reply((ly.Member,), (E.MEMBER_NOT_FOUND, *_STORE, E.IDENTITY_INVALID)),
    ly.IssuePass: Reply((ly.Pass,), (*_MEMBER, *_STORE)),
    ly.GetHistory: Reply((ly.History,), (*_MEMBER, *_STORE)),
    ly.RedeemReward: Reply(
        (ly.RewardCode,),
        (
            *_MEMBER,
            *_LEDGER,
            E.MEMBER_MERGED,
            E.INSUFFICIENT_POINTS,
            E.REWARD_NOT_FOUND,
            E.REWARD_NOT_ELIGIBLE,
        ),
    ),
    # A code moves no points when used: no ledger operation, so no timeout.
    ly.UseCode: Reply((ly.RewardCode,), (*_CODE, *_STORE, E.IDEMPOTENCY_CONFLICT, E.CODE_EXPIRED)),
    # A void gives the points back: the ledger refunds the code's member (merged, erased).
    ly.VoidCode: Reply((ly.RewardCode,), (*_CODE, *_LEDGER, E.MEMBER_MERGED, E.MEMBER_NOT_FOUND)),
    ly.Return: Reply(
        (ly.ReturnReceipt,),
        (
            *_MEMBER,
            *_LEDGER,
            E.MEMBER_MERGED,
            E.SALE_NOT_FOUND,
            E.RETURN_EXCEEDS_SALE,
            E.REDEMPTION_OF_ANOTHER_SALE,
            E.OPERATION_NOT_FOUND,  # its ``redemption`` names no committed redemption
        ),
    ),
    ly.CashierView: Reply((ly.CashierState,), (*_MEMBER, *_STORE)),
    wl.GetWallet: Reply((wl.WalletView,), (*_MEMBER, *_STORE)),
    wl.GetCodes: Reply((wl.Codes,), (*_MEMBER, *_STORE)),
    wl.UpdateProfile: Reply((wl.Profile,), (*_MEMBER, *_STORE, E.TIME_ZONE_UNKNOWN)),
    wl.VerifyContact: Reply(
        (wl.VerificationSent,), (*_MEMBER, *_STORE, E.IDENTITY_INVALID, E.RATE_LIMITED)
    ),
    wl.ConfirmContact: Reply(
        (wl.Profile,), (*_MEMBER, *_STORE, E.VERIFICATION_FAILED, E.IDENTITY_IN_USE)
    ),
}

#: ``hello``'s refusals (each closes the socket: 3503, 3500, 3501, 3004), and ``hello`` sent
#: again on a session already welcomed (which goes on).
HELLO_ERRORS = (
    E.UNSUPPORTED_VERSION,
    E.TOKEN_INVALID,
    E.TOKEN_EXPIRED,
    E.MEMBER_SESSIONS_FULL,
    E.ALREADY_AUTHENTICATED,
    E.INVALID_FIELD,
)


def reply_of(command: type) -> Reply:
    """The answer of a client command's Struct (``KeyError`` for ``Hello``: ``welcome``)."""
    return REPLIES[command]


def allowed(command: type, reply: Any) -> bool:
    """Whether ``reply`` (a ``Result`` or an ``Error`` frame) is one ``command`` may get."""
    r = REPLIES[command]
    if isinstance(reply, m.Result):
        return type(reply.data) in r.data
    if isinstance(reply, m.Error):
        codes = {e.value for e in (*r.errors, *COMMAND_ERRORS, *FRAME_ERRORS)}
        return reply.code in codes
    return False
