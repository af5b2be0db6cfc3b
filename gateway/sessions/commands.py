"""Command dispatch: each authenticated client frame becomes a reply frame.

Handlers check scope first (an app token reaches only its own member, a POS only its
merchant's members), then call the ledger or the read path. Domain refusals come back as
``error`` frames with their stable code; the session carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.errors import Forbidden, GatewayError, Refused
from gateway.ledger import model
from gateway.ledger.engine import Ledger
from gateway.ledger.reads import Reads
from protocol.codes import ErrorCode
from protocol.messages import (
    Commit,
    Error,
    GetBalance,
    GetOutcome,
    Outcome,
    Ping,
    Pong,
    Release,
    Reserve,
    Result,
    Sale,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.fanout.feeds import Feeds
    from gateway.loyalty.earning import Earning
    from gateway.sessions.session import Session


def error_frame(request_id: str | None, exc: GatewayError) -> Error:
    return Error(id=request_id, code=exc.code.value, message=exc.message, retryable=exc.retryable)


def outcome_frame(request_id: str, outcome: Outcome) -> Result | Error:
    if outcome.ok and outcome.data is not None:
        return Result(id=request_id, data=outcome.data)
    err = outcome.error
    assert err is not None
    return Error(id=request_id, code=err.code, message=err.message, retryable=err.retryable)


@dataclass(slots=True)
class Services:
    ledger: Ledger
    reads: Reads
    feeds: Feeds
    earning: Earning
    max_subscriptions: int


def origin(p: Principal) -> model.Origin:
    return model.Origin(
        merchant=p.merchant, channel=p.channel, store=p.store or "", terminal=p.terminal or ""
    )


class Dispatcher:
    def __init__(self, services: Services) -> None:
        self.s = services

    async def authorize_member(self, p: Principal, member: str) -> None:
        if p.kind == "app" and member != p.member:
            raise Forbidden("an app session may only reach its own member")
        owner = await self.s.reads.member_merchant(member)
        if owner is None:
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
        if owner != p.merchant:
            raise Forbidden("the member belongs to another merchant")

    @staticmethod
    def require_pos(p: Principal) -> None:
        if p.kind != "pos":
            raise Forbidden("only POS and shop integrations may change points")

    async def handle(self, session: Session, frame: object) -> object:
        """Return the reply frame for ``frame``; raises ``GatewayError`` for refusals."""
        p = session.principal
        assert p is not None
        if isinstance(frame, Ping):
            return Result(id=frame.id, data=Pong())
        if isinstance(frame, Subscribe):
            return await self._subscribe(session, p, frame)
        if isinstance(frame, Unsubscribe):
            if frame.member in session.subscriptions:
                session.subscriptions.discard(frame.member)
                self.s.feeds.leave(frame.member, session)
            return Result(id=frame.id, data=Unsubscribed(member=frame.member))
        if isinstance(frame, GetBalance):
            await self.authorize_member(p, frame.member)
            bal = await self.s.reads.balance(frame.member)
            if bal is None:
                raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
            return Result(id=frame.id, data=bal)
        if isinstance(frame, GetOutcome):
            found = await self.s.reads.outcome(p.merchant, frame.op)
            if found is None:
                raise Refused("no operation with that id", ErrorCode.OPERATION_NOT_FOUND)
            if p.kind == "app" and _outcome_member(found) != p.member:
                raise Refused("no operation with that id", ErrorCode.OPERATION_NOT_FOUND)
            return Result(id=frame.id, data=found)
        self.require_pos(p)
        o = origin(p)
        if isinstance(frame, Sale):
            await self.authorize_member(p, frame.member)
            earn = await self.s.earning.for_sale(p.merchant, frame, o)
            return outcome_frame(frame.id, await self.s.ledger.execute(earn))
        if isinstance(frame, Reserve):
            op: model.Op = model.Reserve(frame.op, frame.member, frame.points, frame.ttl_ms, o)
        elif isinstance(frame, Commit):
            op = model.Commit(frame.op, frame.member, frame.hold, frame.points, o)
        elif isinstance(frame, Release):
            op = model.Release(frame.op, frame.member, frame.hold, o)
        else:
            raise Refused("unsupported command", ErrorCode.UNKNOWN_TYPE)
        return outcome_frame(frame.id, await self.s.ledger.execute(op))

    async def _subscribe(self, session: Session, p: Principal, frame: Subscribe) -> object:
        await self.authorize_member(p, frame.member)
        if frame.member not in session.subscriptions:
            if len(session.subscriptions) >= self.s.max_subscriptions:
                raise Refused(
                    f"at most {self.s.max_subscriptions} members per session",
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                )
            session.subscriptions.add(frame.member)
        else:
            self.s.feeds.leave(frame.member, session)
        try:
            balance, missed, recovered = await self.s.feeds.join(frame.member, session, frame.since)
        except BaseException:
            session.subscriptions.discard(frame.member)
            raise
        if session.closing:
            self.s.feeds.leave(frame.member, session)
        # Queued before any later change can be: join() returned without yielding after
        # adding the session to the feed.
        return Result(
            id=frame.id,
            data=Subscribed(
                member=frame.member, balance=balance, missed=missed, recovered=recovered
            ),
        )


def _outcome_member(o: Outcome) -> str | None:
    data = o.data
    return getattr(data, "member", None)
