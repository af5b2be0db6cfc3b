"""The ledger's rules as pure functions over a ``BatchState``: no I/O, no clock of its own.

The engine loads the state under row locks, calls ``apply`` for each operation in order, and
writes back what changed. Every rule of the balance model lives here, where a property test can
drive it directly and against the real database through the engine.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from gateway.ledger.balances import account_balance as balance_of
from gateway.ledger.model import (
    Account,
    BatchState,
    Commit,
    Earn,
    Entry,
    Expire,
    Hold,
    Merge,
    Op,
    Origin,
    Release,
    Reserve,
)
from gateway.wire import epoch_ms
from protocol.codes import ErrorCode
from protocol.limits import HOLD_TTL_MAX_MS, MAX_POINTS
from protocol.messages import Balance, ErrorInfo, HoldState, Outcome, SaleReceipt


def refuse(op: str, code: ErrorCode, message: str = "") -> Outcome:
    return Outcome(
        op=op,
        ok=False,
        error=ErrorInfo(code=code.value, message=message or code.description, retryable=False),
    )


def _post(
    state: BatchState,
    acct: Account,
    *,
    kind: str,
    op: str,
    contra: str,
    posted: int,
    held: int,
    origin: Origin,
) -> None:
    acct.posted += posted
    acct.held += held
    acct.version += 1
    acct.dirty = True
    assert acct.held >= 0 and acct.posted - acct.held >= 0, "ledger invariant broken in apply"
    state.entries.append(
        Entry(
            merchant=acct.merchant,
            member=acct.member,
            version=acct.version,
            kind=kind,
            op=op,
            contra=contra,
            posted_delta=posted,
            held_delta=held,
            posted_after=acct.posted,
            held_after=acct.held,
            channel=origin.channel,
            store=origin.store,
            terminal=origin.terminal,
            at=state.now,
        )
    )


def _hold_state(hold: Hold, acct: Account, op: str) -> HoldState:
    return HoldState(
        op=op,
        hold=hold.id,
        member=hold.member,
        status=hold.status,  # type: ignore[arg-type]
        points=hold.amount,
        committed=hold.committed,
        expires_at=epoch_ms(hold.expires_at),
        balance=balance_of(acct),
    )


def expire_overdue(state: BatchState, acct: Account) -> int:
    """Expire the member's active holds whose expiry has passed (lazy expiry). Returns count.

    Only members flagged in ``state.overdue`` can have such holds; each is handled once per
    batch (the batch has one clock reading)."""
    if acct.member not in state.overdue:
        return 0
    state.overdue.discard(acct.member)
    n = 0
    overdue = sorted(
        (
            h
            for h in state.holds.values()
            if h.member == acct.member and h.status == "active" and h.expires_at <= state.now
        ),
        key=lambda h: (h.expires_at, h.id),
    )
    for hold in overdue:
        hold.status = "expired"
        hold.resolved_at = state.now
        hold.dirty = True
        _post(
            state,
            acct,
            kind="expire",
            op=hold.id,
            contra="holds",
            posted=0,
            held=-hold.amount,
            origin=Origin(merchant=hold.merchant, channel="system"),
        )
        n += 1
    return n


def _account(state: BatchState, op: Op, member: str) -> Account | Outcome:
    acct = state.accounts.get(member)
    op_id = getattr(op, "op", "")
    if acct is None or acct.merchant != op.origin.merchant:
        # another merchant's member is answered exactly as one that does not exist: no
        # merchant learns which ids exist elsewhere
        return refuse(op_id, ErrorCode.MEMBER_NOT_FOUND)
    return acct


def merged_refusal(op: str, member: str, into: str) -> Outcome:
    """The refusal of an operation naming ``member``, merged into ``into``."""
    return refuse(
        op, ErrorCode.MEMBER_MERGED, f"member {member} was merged into {into}; use {into}"
    )


#: Largest magnitude an earn or adjustment may post: far inside int8, so no sum overflows.
_MAX_POSTED = 2**53


def _out_of_bounds(op: Op) -> str | None:
    """The protocol's bounds, checked again here for callers inside the node: a value the
    database would refuse must be refused alone, not fail every operation of its batch."""
    if isinstance(op, Reserve):
        if not 1 <= op.points <= MAX_POINTS:
            return f"points must be 1..{MAX_POINTS}"
        if not 1 <= op.ttl_ms <= HOLD_TTL_MAX_MS:  # the wire's floor is 1 s; tests go lower
            return f"ttl_ms must be 1..{HOLD_TTL_MAX_MS}"
    elif isinstance(op, Commit):
        if op.points is not None and not 1 <= op.points <= MAX_POINTS:
            return f"points must be 1..{MAX_POINTS}"
    elif isinstance(op, Earn) and not -_MAX_POSTED <= op.points <= _MAX_POSTED:
        return "points out of range"
    return None


def apply(state: BatchState, op: Op) -> Outcome:
    """Apply one operation to the state; return its outcome (refusals change nothing)."""
    bad = _out_of_bounds(op)
    if bad is not None:
        return refuse(getattr(op, "op", ""), ErrorCode.INVALID_FIELD, bad)
    got = _account(state, op, op.member)
    if isinstance(got, Outcome):
        return got
    acct = got
    outcome = _apply(state, acct, op)
    if _settle(state, acct, op) and outcome.ok:
        outcome = _rebalanced(outcome, acct)
    return outcome


def _settle(state: BatchState, acct: Account, op: Op) -> bool:
    """Points became available (an earn, a released or expired hold, a refund, a merge, or a
    row left so by a node of the previous release) while the member owes a return's clawback:
    take them first. Run before the operation too, after lazy expiry, so an operation never
    spends points that are owed. Returns whether anything was taken."""
    if not (acct.owed and acct.available > 0):
        return False
    cause = getattr(op, "op", "") or (state.entries[-1].op if state.entries else "recovery")
    _recover(state, acct, cause, op.origin)
    return True


def _recover(state: BatchState, acct: Account, op: str, origin: Origin) -> None:
    take = min(acct.owed, acct.available)
    acct.owed -= take
    _post(
        state,
        acct,
        kind="recovery",
        op=op,
        contra="issuance",
        posted=-take,
        held=0,
        origin=origin,
    )


def _rebalanced(outcome: Outcome, acct: Account) -> Outcome:
    """The outcome, with the balance it reports as it stands after a recovery."""
    data = outcome.data
    if isinstance(data, Balance):
        data = balance_of(acct)
    elif isinstance(data, SaleReceipt | HoldState) and data.balance is not None:
        data = msgspec.structs.replace(data, balance=balance_of(acct))
    return msgspec.structs.replace(outcome, data=data)


def _apply(state: BatchState, acct: Account, op: Op) -> Outcome:
    expire_overdue(state, acct)
    _settle(state, acct, op)
    if isinstance(op, Expire):
        return Outcome(op="", ok=True, data=balance_of(acct))
    if acct.merged_into is not None:
        return merged_refusal(op.op, acct.member, acct.merged_into)
    if acct.closed:
        return refuse(op.op, ErrorCode.MEMBER_NOT_FOUND, "the member was erased")
    if isinstance(op, Merge):
        return _merge(state, acct, op)
    if isinstance(op, Earn):
        return _earn(state, acct, op)
    if isinstance(op, Reserve):
        return _reserve(state, acct, op)
    if isinstance(op, Commit):
        return _commit(state, acct, op)
    return _release(state, acct, op)


def _earn(state: BatchState, acct: Account, op: Earn) -> Outcome:
    points = op.points
    if op.if_version is not None and acct.version != op.if_version:
        points = 0  # the account moved since it was read: nothing is posted
    elif points < 0 and -points > acct.available:
        if not op.clamp:
            return refuse(op.op, ErrorCode.INSUFFICIENT_POINTS)
        if op.owe:
            acct.owed += -points - acct.available
            acct.dirty = True
        points = -acct.available
    if points != 0:
        _post(
            state,
            acct,
            kind=op.kind,
            op=op.op,
            contra=op.contra,
            posted=points,
            held=0,
            origin=op.origin,
        )
    receipt = SaleReceipt(
        op=op.op,
        member=acct.member,
        points=points,
        breakdown=list(op.breakdown),
        balance=balance_of(acct),
    )
    return Outcome(op=op.op, ok=True, data=receipt)


def _reserve(state: BatchState, acct: Account, op: Reserve) -> Outcome:
    key = (op.origin.merchant, op.op)
    if key in state.holds:
        # The hold id is the reserve's op id, so an existing hold means the op ran already;
        # the engine replays it before we get here. Reaching this is a bug, refuse safely.
        return refuse(op.op, ErrorCode.IDEMPOTENCY_CONFLICT, "hold id already in use")
    if acct.available < op.points:
        return refuse(
            op.op,
            ErrorCode.INSUFFICIENT_POINTS,
            f"available {acct.available} < requested {op.points}",
        )
    hold = Hold(
        merchant=op.origin.merchant,
        id=op.op,
        member=acct.member,
        amount=op.points,
        committed=0,
        status="active",
        expires_at=state.now + timedelta(milliseconds=op.ttl_ms),
        created_at=state.now,
        dirty=True,
    )
    state.holds[key] = hold
    _post(
        state,
        acct,
        kind="hold",
        op=op.op,
        contra="holds",
        posted=0,
        held=op.points,
        origin=op.origin,
    )
    return Outcome(op=op.op, ok=True, data=_hold_state(hold, acct, op.op))


def _find_hold(state: BatchState, op: Commit | Release) -> Hold | Outcome:
    hold = state.holds.get((op.origin.merchant, op.hold))
    if hold is None:
        return refuse(op.op, ErrorCode.HOLD_NOT_FOUND)
    if hold.member != op.member:
        # A merge moves only active holds; one that had expired, or was resolved, on the
        # duplicate stays there. Naming the survivor, it gets its own state's answer. Any
        # other member's hold is not found.
        if hold.status == "active" or state.survivors.get(hold.member) != op.member:
            return refuse(op.op, ErrorCode.HOLD_NOT_FOUND)
        if hold.status == "expired":
            return refuse(op.op, ErrorCode.HOLD_EXPIRED)
        return refuse(op.op, ErrorCode.HOLD_NOT_ACTIVE, f"the hold is {hold.status}")
    if hold.status == "active" and hold.expires_at <= state.now:
        # Past expiry counts as expired whatever else happened: release it now.
        acct = state.accounts[hold.member]
        state.overdue.add(hold.member)
        expire_overdue(state, acct)
    if hold.status == "expired":
        return refuse(op.op, ErrorCode.HOLD_EXPIRED)
    if hold.status != "active":
        return refuse(op.op, ErrorCode.HOLD_NOT_ACTIVE, f"the hold is {hold.status}")
    return hold


def _commit(state: BatchState, acct: Account, op: Commit) -> Outcome:
    found = _find_hold(state, op)
    if isinstance(found, Outcome):
        return found
    hold = found
    amount = hold.amount if op.points is None else op.points
    if amount > hold.amount:
        return refuse(op.op, ErrorCode.COMMIT_EXCEEDS_HOLD, f"commit {amount} > held {hold.amount}")
    hold.status = "committed"
    hold.committed = amount
    hold.resolved_at = state.now
    hold.dirty = True
    _post(
        state,
        acct,
        kind=op.kind,
        op=op.op,
        contra="redemption",
        posted=-amount,
        held=-hold.amount,
        origin=op.origin,
    )
    return Outcome(op=op.op, ok=True, data=_hold_state(hold, acct, op.op))


def _release(state: BatchState, acct: Account, op: Release) -> Outcome:
    found = _find_hold(state, op)
    if isinstance(found, Outcome):
        return found
    hold = found
    hold.status = "released"
    hold.resolved_at = state.now
    hold.dirty = True
    _post(
        state,
        acct,
        kind="release",
        op=op.op,
        contra="holds",
        posted=0,
        held=-hold.amount,
        origin=op.origin,
    )
    return Outcome(op=op.op, ok=True, data=_hold_state(hold, acct, op.op))


def _merge(state: BatchState, survivor: Account, op: Merge) -> Outcome:
    """Move everything of ``op.source`` to the survivor: posted points and active holds (the
    hold rows are re-pointed, so a commit or release naming the survivor finds them). One
    ``merge_out`` entry on the source and one ``merge_in`` on the survivor (none when the
    source has nothing); the source is marked merged either way."""
    if op.source == survivor.member:
        return refuse(op.op, ErrorCode.INVALID_FIELD, "a member cannot be merged into itself")
    got = _account(state, op, op.source)
    if isinstance(got, Outcome):
        return got
    source = got
    if source.merged_into is not None:
        return merged_refusal(op.op, source.member, source.merged_into)
    if source.closed:
        return refuse(op.op, ErrorCode.MEMBER_NOT_FOUND, f"member {source.member} was erased")
    expire_overdue(state, source)
    moved = sorted(
        (h for h in state.holds.values() if h.member == source.member and h.status == "active"),
        key=lambda h: h.id,
    )
    held = sum(h.amount for h in moved)
    assert held == source.held, "a merge's source must have all its active holds loaded"
    posted = source.posted
    for hold in moved:
        hold.member = survivor.member
        hold.dirty = True
    if posted or held:
        _post(
            state,
            source,
            kind="merge_out",
            op=op.op,
            contra="merge",
            posted=-posted,
            held=-held,
            origin=op.origin,
        )
        _post(
            state,
            survivor,
            kind="merge_in",
            op=op.op,
            contra="merge",
            posted=posted,
            held=held,
            origin=op.origin,
        )
    # What the duplicate owes is owed by the survivor (taken from its points at once).
    survivor.owed += source.owed
    source.owed = 0
    source.merged_into = survivor.member
    source.dirty = True
    survivor.dirty = True
    return Outcome(op=op.op, ok=True, data=balance_of(survivor))
