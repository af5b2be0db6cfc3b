"""Small conversions shared by the loyalty services: ledger outcomes to errors, balances to the
loyalty frames' balance item."""

from __future__ import annotations

from gateway.errors import Refused
from protocol.codes import ErrorCode
from protocol.loyalty import MemberBalance
from protocol.messages import Balance, Outcome


def member_balance(b: Balance) -> MemberBalance:
    return MemberBalance(posted=b.posted, held=b.held, available=b.available, version=b.version)


def refused(outcome: Outcome) -> Refused:
    err = outcome.error
    assert err is not None
    return Refused(err.message, ErrorCode(err.code))
