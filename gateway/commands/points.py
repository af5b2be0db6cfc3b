"""The points commands: ``balance``, ``outcome``, and the holds a register places at checkout
(``reserve``, then ``commit`` or ``release``)."""

from __future__ import annotations

import msgspec

from gateway.errors import Refused
from gateway.ledger import Commit, Ledger, Op, Origin, Reads, Release, Reserve
from gateway.purchases import Returns
from gateway.rewards import Rewards
from gateway.sessions import Call, Scope
from protocol import messages as m
from protocol.codes import ErrorCode
from protocol.loyalty import ReturnReceipt


def origin(call: Call) -> Origin:
    """Where the command's operations come from, with the command's place in its session's
    order (the ledger tells it once the operation is queued)."""
    p = call.principal
    return Origin(
        merchant=p.merchant,
        channel=p.channel,
        store=p.store or "",
        terminal=p.terminal or "",
        ticket=call.place,
    )


def op_id(call: Call, op: str) -> str:
    """The ledger id of a client's ``op``. A register's is its own (receipt numbers, say); an
    app's lives in a space of its member's, so an app can neither take a register's future id
    first (its sale would get idempotency_conflict) nor probe which ids exist. ``~`` and ``/``
    are outside the client id charset: no client can name this space."""
    p = call.principal
    return op if p.kind == "pos" else f"~app/{p.member}/{op}"


def outcome_frame(request_id: str, outcome: m.Outcome) -> m.Result | m.Error:
    if outcome.ok and outcome.data is not None:
        return m.Result(id=request_id, data=outcome.data)
    err = outcome.error
    assert err is not None
    return m.Error(id=request_id, code=err.code, message=err.message, retryable=err.retryable)


class Points:
    def __init__(
        self, ledger: Ledger, reads: Reads, scope: Scope, returns: Returns, rewards: Rewards
    ) -> None:
        self._ledger = ledger
        self._reads = reads
        self._scope = scope
        self._returns = returns
        self._rewards = rewards

    async def _as_replied(self, merchant: str, op: str, found: m.Outcome) -> m.Outcome:
        """The outcome with the data the command's own reply carried: a return's receipt, the
        code of a redemption or a void (the ledger records the points they moved)."""
        posted = found.data
        if not (found.ok and isinstance(posted, m.SaleReceipt)):
            return found
        rules = {b.rule for b in posted.breakdown}
        data: object = None
        if {"return", "refund"} <= rules:
            data = await self._returns.receipt(merchant, op, posted)
        elif any(r.startswith(("reward:", "void:")) for r in rules):
            data = await self._rewards.reply_of(merchant, op, posted)
        return found if data is None else msgspec.structs.replace(found, data=data)

    async def balance(self, call: Call, frame: m.GetBalance) -> object:
        await self._scope.authorize_member(call.principal, frame.member)
        bal = await self._reads.balance(frame.member)
        if bal is None:
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
        return m.Result(id=frame.id, data=bal)

    async def outcome(self, call: Call, frame: m.GetOutcome) -> object:
        p = call.principal
        found = await self._reads.outcome(p.merchant, op_id(call, frame.op))
        if found is None or (p.kind == "app" and getattr(found.data, "member", None) != p.member):
            raise Refused("no operation with that id", ErrorCode.OPERATION_NOT_FOUND)
        self._ledger.replied([found])  # this node's reads now never go below the version told
        found = await self._as_replied(p.merchant, op_id(call, frame.op), found)
        if found.op != frame.op:  # an app's: told by the id it sent
            data = found.data
            if isinstance(data, m.SaleReceipt | m.HoldState | ReturnReceipt):
                data = msgspec.structs.replace(data, op=frame.op)
            found = msgspec.structs.replace(found, op=frame.op, data=data)
        return m.Result(id=frame.id, data=found)

    async def hold(self, call: Call, frame: m.Reserve | m.Commit | m.Release) -> object:
        self._scope.require_pos(call.principal)
        o = origin(call)
        op: Op
        if isinstance(frame, m.Reserve):
            op = Reserve(frame.op, frame.member, frame.points, frame.ttl_ms, o)
        elif isinstance(frame, m.Commit):
            op = Commit(frame.op, frame.member, frame.hold, frame.points, o)
        else:
            op = Release(frame.op, frame.member, frame.hold, o)
        return outcome_frame(frame.id, await self._ledger.execute(op))
