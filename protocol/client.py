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
  yields :class:`Gap`; a push at or below the last version is dropped as :class:`Stale`,
  except a version still missing (after a gap, or skipped by a reply that overtook the pushes
  of a watched member), which comes as ``Changed(filled=True)``;
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

# long module: one class, with a builder per client command of the protocol (25, each a few
# lines) beside the version and subscription bookkeeping they feed.
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import msgspec

from protocol.codec import DecodeError, decode_client, decode_server, encode
from protocol.codes import close_should_reconnect
from protocol.events import (
    Changed,
    Event,
    Failed,
    Gap,
    Ignored,
    Pushed,
    Reply,
    Resync,
    Stale,
    Welcomed,
)
from protocol.limits import HOLD_TTL_DEFAULT_MS, REQUEST_ID_PATTERN
from protocol.loyalty import (
    HISTORY_DEFAULT_PAGE,
    CashierState,
    CashierView,
    Enrol,
    GetHistory,
    IssuePass,
    Lookup,
    Member,
    MemberBalance,
    MemberMerged,
    RedeemReward,
    Return,
    ReturnLine,
    ReturnReceipt,
    RewardCode,
    UseCode,
    VoidCode,
)
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
    Refresh,
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
from protocol.wallet import (
    CODES_DEFAULT_PAGE,
    WALLET_HISTORY_DEFAULT,
    Birthday,
    CodeStatus,
    ConfirmContact,
    Consents,
    GetCodes,
    GetWallet,
    UpdateProfile,
    VerifyContact,
    WalletView,
)

# --------------------------------------------------------------------------- session


class _Id(msgspec.Struct):
    id: str | None = None


_id_decoder = msgspec.json.Decoder(_Id)

#: Leaves room for a 20-digit counter within the 64-character request id.
_MAX_PREFIX = 44
#: Missing versions listed one by one after a gap (the server replays at most its
#: GATEWAY_MAX_RECOVERY, 100 by default); a wider gap is kept as where it starts.
_MAX_HOLES = 1_000


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
        #: Subscriptions that asked for presence (kept on resume).
        self._presence: set[str] = set()
        #: Versions a gap skipped, per member, until a re-subscription brings them; a gap wider
        #: than ``_MAX_HOLES`` is kept as its first missing version only (``_behind``).
        self._holes: dict[str, set[int]] = {}
        self._behind: dict[str, int] = {}
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

    def refresh(self, token: str) -> bytes:
        """A new token of the same scope, sent before the session's own expires (else 3501)."""
        return self.send(Refresh(id=self.next_id(), token=token))

    def subscribe(
        self, member: str, since: int | None = None, replace: bool = False, presence: bool = False
    ) -> bytes:
        """Watch ``member``; with ``since``, the reply carries the changes after it; with
        ``replace``, the session's other subscriptions end (a register's next customer); with
        ``presence``, the member's connected apps are pushed too."""
        frame = Subscribe(
            id=self.next_id(), member=member, since=since, replace=replace, presence=presence
        )
        return self.send(frame)

    def _resume_from(self, member: str) -> int | None:
        holes = self._holes.get(member)
        starts = [min(holes)] if holes else []
        if member in self._behind:
            starts.append(self._behind[member])
        return min(starts) - 1 if starts else self._versions.get(member)

    def resume(self) -> list[bytes]:
        """Re-subscribe every subscription (after reconnect), each from its last version seen,
        or from before the first version a gap left missing, with its presence flag."""
        return [
            self.subscribe(m, self._resume_from(m), presence=m in self._presence)
            for m in sorted(self._subscriptions)
        ]

    def refill(self, member: str) -> bytes:
        """After a :class:`Gap`: re-subscribe ``member`` from before the first missing version
        (the missed changes come back as ``Changed(filled=True)``)."""
        return self.subscribe(member, self._resume_from(member), presence=member in self._presence)

    def cashier_view(self, member: str, replace: bool = False) -> bytes:
        """Everything the register shows for ``member``; the session is then subscribed to it."""
        return self.send(CashierView(id=self.next_id(), member=member, replace=replace))

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

    # The loyalty programme (protocol.loyalty). Builders named after a Python keyword take a
    # trailing underscore: ``pass_`` (type ``pass``), ``return_`` (type ``return``).

    def enrol(
        self,
        phone: str | None = None,
        email: str | None = None,
        card: str | None = None,
        name: str = "",
    ) -> bytes:
        """Find or create the member with this phone and/or email (and attach ``card``); an
        identity that exists returns its member (``created`` absent), never a duplicate."""
        frame = Enrol(id=self.next_id(), phone=phone, email=email, card=card, name=name)
        return self.send(frame)

    def lookup(
        self,
        phone: str | None = None,
        email: str | None = None,
        card: str | None = None,
        qr: str | None = None,
    ) -> bytes:
        """Find a member by exactly one of ``phone``, ``email``, ``card`` or ``qr`` (a pass)."""
        given = sum(v is not None for v in (phone, email, card, qr))
        if given != 1:
            raise ValueError(f"lookup takes exactly one of phone, email, card, qr ({given} given)")
        return self.send(Lookup(id=self.next_id(), phone=phone, email=email, card=card, qr=qr))

    def pass_(self, member: str) -> bytes:
        """A short-lived signed pass (the QR code an app shows; a register's ``lookup(qr=)``)."""
        return self.send(IssuePass(id=self.next_id(), member=member))

    def history(
        self, member: str, before: str | None = None, limit: int = HISTORY_DEFAULT_PAGE
    ) -> bytes:
        """A page of ``member``'s purchases, newest first (``before``: a page's ``next``)."""
        return self.send(GetHistory(id=self.next_id(), member=member, before=before, limit=limit))

    def redeem_reward(self, op: str, member: str, reward: str) -> bytes:
        """Turn points into a single-use code for catalogue reward ``reward``."""
        return self.send(RedeemReward(id=self.next_id(), op=op, member=member, reward=reward))

    def use_code(self, op: str, code: str) -> bytes:
        """Redeem reward code ``code`` (exactly once, ever). ``outcome`` does not know it: retry
        it with the same ``op`` to settle it."""
        return self.send(UseCode(id=self.next_id(), op=op, code=code))

    def void_code(self, op: str, code: str) -> bytes:
        """Void an unredeemed code; its points go back to the member."""
        return self.send(VoidCode(id=self.next_id(), op=op, code=code))

    def return_(
        self,
        op: str,
        member: str,
        sale: str,
        lines: Sequence[ReturnLine] = (),
        amount: int | None = None,
        redemption: str | None = None,
    ) -> bytes:
        """Return goods of sale ``sale`` (its ``op``): all of it, the quantities in ``lines``,
        or ``amount`` minor units of a sale posted without lines; ``redemption`` names the
        commit that paid part of the sale with points (restored in proportion)."""
        frame = Return(
            id=self.next_id(),
            op=op,
            member=member,
            sale=sale,
            lines=list(lines),
            amount=amount,
            redemption=redemption,
        )
        return self.send(frame)

    # The shopper's wallet (protocol.wallet).

    def wallet(self, member: str, history: int = WALLET_HISTORY_DEFAULT) -> bytes:
        """Everything the wallet shows for ``member``; the session is then subscribed to it."""
        return self.send(GetWallet(id=self.next_id(), member=member, history=history))

    def codes(
        self,
        member: str,
        status: CodeStatus = "all",
        before: str | None = None,
        limit: int = CODES_DEFAULT_PAGE,
    ) -> bytes:
        """A page of ``member``'s reward codes, newest first, by ``status``."""
        frame = GetCodes(
            id=self.next_id(), member=member, status=status, before=before, limit=limit
        )
        return self.send(frame)

    def update_profile(
        self,
        member: str,
        name: str | None = None,
        birthday: Birthday | None = None,
        consent: Consents | None = None,
        preferred_store: str | None = None,
        clear_preferred_store: bool = False,
        time_zone: str | None = None,
        clear_time_zone: bool = False,
    ) -> bytes:
        """Change what is given of ``member``'s profile (what is left out keeps its value)."""
        frame = UpdateProfile(
            id=self.next_id(),
            member=member,
            name=name,
            birthday=birthday,
            consent=consent,
            preferred_store=preferred_store,
            clear_preferred_store=clear_preferred_store,
            time_zone=time_zone,
            clear_time_zone=clear_time_zone,
        )
        return self.send(frame)

    def verify_contact(
        self, member: str, email: str | None = None, phone: str | None = None
    ) -> bytes:
        """Send a one-time code to a new ``email`` or ``phone`` (exactly one) of ``member``."""
        if (email is None) == (phone is None):
            raise ValueError("verify_contact takes exactly one of email, phone")
        return self.send(VerifyContact(id=self.next_id(), member=member, email=email, phone=phone))

    def confirm_contact(
        self, member: str, code: str, email: str | None = None, phone: str | None = None
    ) -> bytes:
        """Prove the new address with the ``code`` it received: it becomes ``member``'s."""
        if (email is None) == (phone is None):
            raise ValueError("confirm_contact takes exactly one of email, phone")
        frame = ConfirmContact(
            id=self.next_id(), member=member, code=code, email=email, phone=phone
        )
        return self.send(frame)

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
            return [Ignored(exc.code, exc.message, self._answered(data))]
        events: list[Event] = []
        if isinstance(frame, BalanceChanged):
            self._on_change(frame, events)
        elif isinstance(frame, ResyncFrame):
            self._on_resync(frame.balance, frame.reason, events)
        elif isinstance(frame, Welcome):
            self._pending.pop(frame.id, None)
            self.welcome = frame
            events.append(Welcomed(frame))
        elif isinstance(frame, Error):
            request = self._pending.pop(frame.id, None) if frame.id is not None else None
            if isinstance(request, Subscribe) and not frame.retryable:
                self._forget(request.member)  # not watched: do not resume it either
            events.append(Failed(request, frame))
        elif isinstance(frame, Result):
            self._on_result(frame, events)
        else:
            if isinstance(frame, MemberMerged):
                self._forget(frame.member)  # it gets no more changes: watch ``into`` instead
            events.append(Pushed(frame))
        return events

    def _answered(self, data: bytes | str) -> ClientFrame | None:
        """The pending command an undecodable reply answered, if its id can be read."""
        try:
            rid = _id_decoder.decode(data).id
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return self._pending.pop(rid, None) if isinstance(rid, str) else None

    def _forget(self, member: str) -> None:
        self._subscriptions.discard(member)
        self._presence.discard(member)
        self._holes.pop(member, None)
        self._behind.pop(member, None)

    def _on_result(self, frame: Result, events: list[Event]) -> None:
        request = self._pending.pop(frame.id, None)
        data = frame.data
        events.append(Reply(request, data))
        if isinstance(data, Subscribed):
            self._on_subscribed(data, request, events)
        elif isinstance(data, Unsubscribed):
            self._forget(data.member)
        elif isinstance(data, CashierState | WalletView):
            # The server subscribed the session to the member it shows (the survivor, for a
            # merged duplicate), as a ``subscribe`` (with the view's ``replace``) would have.
            member = data.member.member
            balance = _balance(member, data.balance)
            if member in self._subscriptions:
                self._ahead(balance)  # watched already: its pushes may be behind this reply
            else:
                self._advance(balance)
            if data.subscribed:
                if isinstance(request, CashierView) and request.replace:
                    for other in [m for m in self._subscriptions if m != member]:
                        self._forget(other)
                self._subscriptions.add(member)
        else:
            self._note_balances(data)

    def _on_subscribed(
        self, data: Subscribed, request: ClientFrame | None, events: list[Event]
    ) -> None:
        if isinstance(request, Subscribe) and request.replace:
            for other in [m for m in self._subscriptions if m != data.member]:
                self._forget(other)
        self._subscriptions.add(data.member)
        if isinstance(request, Subscribe):
            if request.presence:
                self._presence.add(data.member)
            else:
                self._presence.discard(data.member)
        since = request.since if isinstance(request, Subscribe) else None
        if data.member not in self._versions and since is not None:
            self._versions[data.member] = since  # the missed changes start after it
        behind = self._behind.get(data.member)
        if behind is not None and since is not None and since < behind and data.recovered:
            del self._behind[data.member]  # this reply carries everything after ``since``
        for change in data.missed:
            self._on_change(change, events)
        if not data.recovered:
            self._on_resync(data.balance, "not_recovered", events)
        else:
            self._advance(data.balance)

    def _on_change(self, change: BalanceChanged, events: list[Event]) -> None:
        member = change.member
        last = self._versions.get(member)
        holes = self._holes.get(member)
        if holes and change.version in holes:  # a version a gap left missing, recovered
            holes.discard(change.version)
            if not holes:
                del self._holes[member]
            events.append(Changed(change, filled=True))
            return
        if last is not None and change.version <= last:
            events.append(Stale(member, change.version, last))
            return
        if last is not None and change.version > last + 1:
            events.append(Gap(member, last + 1, change.version))
            holes = self._holes.get(member, set())
            if len(holes) + change.version - last - 1 <= _MAX_HOLES:
                holes.update(range(last + 1, change.version))
                self._holes[member] = holes
            else:  # too many to list: remember where to refill from, not each version
                first = min(holes) if holes else last + 1
                self._behind[member] = min(self._behind.get(member, first), first)
                self._holes.pop(member, None)
        self._versions[member] = change.version
        events.append(Changed(change))

    def _on_resync(self, balance: Balance, reason: str, events: list[Event]) -> None:
        last = self._versions.get(balance.member)
        if last is not None and balance.version < last:
            # Older than a version already seen (a reply travelled faster than the fan-out):
            # not the truth any more. Only the versions up to it are given up; a newer one a
            # gap left missing is still asked for by ``refill``.
            self._give_up(balance.member, balance.version)
            events.append(Stale(balance.member, balance.version, last))
            return
        self._resynced(balance)
        events.append(Resync(balance.member, balance, reason))

    def _give_up(self, member: str, upto: int) -> None:
        """The versions up to ``upto`` that a gap left missing will not come."""
        holes = self._holes.get(member)
        if holes:
            holes.difference_update([v for v in holes if v <= upto])
            if not holes:
                del self._holes[member]
        behind = self._behind.get(member)
        if behind is not None and behind <= upto:
            if upto + 1 < self._versions.get(member, -1):  # the missing run went past it
                self._behind[member] = upto + 1
            else:
                del self._behind[member]

    def _resynced(self, balance: Balance) -> None:
        """The server says ``balance`` is the truth and the history before it is lost: the
        missing versions will not come; the last version never moves back."""
        self._holes.pop(balance.member, None)
        self._behind.pop(balance.member, None)
        self._advance(balance)

    def _advance(self, balance: Balance) -> None:
        """A snapshot moves the last version forward, never back (it reports no gap)."""
        if balance.version > self._versions.get(balance.member, -1):
            self._versions[balance.member] = balance.version

    def _ahead(self, balance: Balance) -> None:
        """A command's reply: it may be ahead of the pushes of a watched member (the reply left
        the node before the fan-out reached this session). The versions it skipped are then
        still on their way: they are kept as missing, so their pushes come as
        ``Changed(filled=True)`` rather than ``Stale``, and a reconnect resumes from before them.
        A reply on a member not watched only moves the last version."""
        member = balance.member
        last = self._versions.get(member)
        if member in self._subscriptions and last is not None and balance.version > last + 1:
            holes = self._holes.get(member, set())
            if len(holes) + balance.version - last - 1 <= _MAX_HOLES:
                holes.update(range(last + 1, balance.version))
                self._holes[member] = holes
        self._advance(balance)

    def _note_balances(self, data: ResultData | None) -> None:
        if isinstance(data, Balance):
            self._ahead(data)
        elif isinstance(data, SaleReceipt | HoldState) and data.balance is not None:
            self._ahead(data.balance)
        elif isinstance(data, Member | RewardCode | ReturnReceipt) and data.balance is not None:
            self._ahead(_balance(data.member, data.balance))
        elif isinstance(data, Outcome):
            self._note_balances(data.data)


def _balance(member: str, b: MemberBalance) -> Balance:
    """A loyalty reply's balance (which names no member) as a protocol ``Balance``."""
    return Balance(
        member=member, posted=b.posted, held=b.held, available=b.available, version=b.version
    )


__all__ = [
    "Changed",
    "ClientSession",
    "Event",
    "Failed",
    "Gap",
    "Ignored",
    "Pushed",
    "Reply",
    "Resync",
    "Stale",
    "Welcomed",
]
