"""One awaitable method per command of protocol v1 (``hello`` is the client's own business).

Each builds its frame with ``protocol.client.ClientSession`` (validated as the server would:
a bad field raises ``protocol.DecodeError`` before anything is sent or journaled), waits for
the reply and returns its data, typed, or raises ``CommandError`` with the stable code.

Commands that change points or codes take an ``op``: made by the client (``new_op()``) unless
given, written to the journal before the first send, and reused on every retry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from protocol.client import ClientSession
from protocol.limits import HOLD_TTL_DEFAULT_MS
from protocol.loyalty import (
    HISTORY_DEFAULT_PAGE,
    CashierState,
    History,
    Member,
    Pass,
    ReturnLine,
    ReturnReceipt,
    RewardCode,
)
from protocol.messages import (
    Balance,
    HoldState,
    Outcome,
    Pong,
    Refreshed,
    ResultData,
    SaleLine,
    SaleReceipt,
    Subscribed,
    Unsubscribed,
)
from protocol.wallet import (
    CODES_DEFAULT_PAGE,
    WALLET_HISTORY_DEFAULT,
    Birthday,
    Codes,
    CodeStatus,
    Consents,
    Profile,
    VerificationSent,
    WalletView,
)

T = TypeVar("T", bound=ResultData)
Build = Callable[[ClientSession], bytes]


class Commands:
    """The command methods of ``Client``; it provides ``_request`` and ``new_op``."""

    async def _request(
        self,
        build: Build,
        kind: type[T],
        *,
        op: str | None = None,
        repeatable: bool = True,
        timeout: float | None = None,
    ) -> T:
        raise NotImplementedError

    def new_op(self) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ session

    async def ping(self, *, timeout: float | None = None) -> Pong:
        return await self._request(lambda s: s.ping(), Pong, timeout=timeout)

    async def refresh(self, token: str, *, timeout: float | None = None) -> Refreshed:
        """Give the session a new token of the same scope (the client does this by itself
        before the current token's ``exp``; see ``Client(refresh_margin=)``)."""
        return await self._request(
            lambda s: s.refresh(token), Refreshed, repeatable=False, timeout=timeout
        )

    # ------------------------------------------------------------------ balances

    async def subscribe(
        self,
        member: str,
        since: int | None = None,
        *,
        replace: bool = False,
        presence: bool = False,
        timeout: float | None = None,
    ) -> Subscribed:
        """Watch ``member``: its changes arrive as ``Changed`` events, and after a reconnect
        the client re-subscribes it from the last version seen."""
        return await self._request(
            lambda s: s.subscribe(member, since, replace=replace, presence=presence),
            Subscribed,
            timeout=timeout,
        )

    async def unsubscribe(self, member: str, *, timeout: float | None = None) -> Unsubscribed:
        return await self._request(lambda s: s.unsubscribe(member), Unsubscribed, timeout=timeout)

    async def balance(self, member: str, *, timeout: float | None = None) -> Balance:
        return await self._request(lambda s: s.balance(member), Balance, timeout=timeout)

    async def outcome(self, op: str, *, timeout: float | None = None) -> Outcome:
        """What became of ``op`` (``operation_not_found`` is no proof it never happens: send
        the command again with the same ``op`` to settle it)."""
        return await self._request(lambda s: s.outcome(op), Outcome, timeout=timeout)

    # ------------------------------------------------------------------ moving points

    async def sale(
        self,
        member: str,
        total: int,
        lines: Sequence[SaleLine] = (),
        *,
        op: str | None = None,
        timeout: float | None = None,
    ) -> SaleReceipt:
        """Post a completed purchase (``total`` and prices in minor units)."""
        op = op or self.new_op()
        return await self._request(
            lambda s: s.sale(op, member, total, lines), SaleReceipt, op=op, timeout=timeout
        )

    async def reserve(
        self,
        member: str,
        points: int,
        ttl_ms: int = HOLD_TTL_DEFAULT_MS,
        *,
        op: str | None = None,
        timeout: float | None = None,
    ) -> HoldState:
        """Hold ``points``; the hold's id is the returned state's ``hold`` (its ``op``)."""
        op = op or self.new_op()
        return await self._request(
            lambda s: s.reserve(op, member, points, ttl_ms), HoldState, op=op, timeout=timeout
        )

    async def commit(
        self,
        member: str,
        hold: str,
        points: int | None = None,
        *,
        op: str | None = None,
        timeout: float | None = None,
    ) -> HoldState:
        """Spend hold ``hold``: all of it, or ``points`` of it (the rest is released)."""
        op = op or self.new_op()
        return await self._request(
            lambda s: s.commit(op, member, hold, points), HoldState, op=op, timeout=timeout
        )

    async def release(
        self, member: str, hold: str, *, op: str | None = None, timeout: float | None = None
    ) -> HoldState:
        op = op or self.new_op()
        return await self._request(
            lambda s: s.release(op, member, hold), HoldState, op=op, timeout=timeout
        )

    # ------------------------------------------------------------------ the programme

    async def enrol(
        self,
        phone: str | None = None,
        email: str | None = None,
        *,
        card: str | None = None,
        name: str = "",
        timeout: float | None = None,
    ) -> Member:
        """Find or create the member of this phone and/or email (``created`` is True only when
        this request enrolled it). Safe to send again: it never makes a duplicate."""
        return await self._request(
            lambda s: s.enrol(phone, email, card, name), Member, timeout=timeout
        )

    async def lookup(
        self,
        phone: str | None = None,
        email: str | None = None,
        *,
        card: str | None = None,
        qr: str | None = None,
        timeout: float | None = None,
    ) -> Member:
        return await self._request(
            lambda s: s.lookup(phone, email, card, qr), Member, timeout=timeout
        )

    async def pass_(self, member: str, *, timeout: float | None = None) -> Pass:
        """A short-lived signed pass for ``member`` (the QR code an app shows)."""
        return await self._request(lambda s: s.pass_(member), Pass, timeout=timeout)

    async def history(
        self,
        member: str,
        before: str | None = None,
        limit: int = HISTORY_DEFAULT_PAGE,
        *,
        timeout: float | None = None,
    ) -> History:
        return await self._request(
            lambda s: s.history(member, before, limit), History, timeout=timeout
        )

    async def redeem_reward(
        self, member: str, reward: str, *, op: str | None = None, timeout: float | None = None
    ) -> RewardCode:
        op = op or self.new_op()
        return await self._request(
            lambda s: s.redeem_reward(op, member, reward), RewardCode, op=op, timeout=timeout
        )

    async def use_code(
        self, code: str, *, op: str | None = None, timeout: float | None = None
    ) -> RewardCode:
        """Redeem a reward code, exactly once (``outcome`` does not know it: the client settles
        it by sending it again with the same ``op``)."""
        op = op or self.new_op()
        return await self._request(
            lambda s: s.use_code(op, code), RewardCode, op=op, timeout=timeout
        )

    async def void_code(
        self, code: str, *, op: str | None = None, timeout: float | None = None
    ) -> RewardCode:
        op = op or self.new_op()
        return await self._request(
            lambda s: s.void_code(op, code), RewardCode, op=op, timeout=timeout
        )

    async def return_(
        self,
        member: str,
        sale: str,
        lines: Sequence[ReturnLine] = (),
        *,
        amount: int | None = None,
        redemption: str | None = None,
        op: str | None = None,
        timeout: float | None = None,
    ) -> ReturnReceipt:
        """Return goods of sale ``sale`` (its ``op``): all of it, ``lines``, or ``amount``."""
        op = op or self.new_op()
        return await self._request(
            lambda s: s.return_(op, member, sale, lines, amount, redemption),
            ReturnReceipt,
            op=op,
            timeout=timeout,
        )

    async def cashier_view(
        self, member: str, *, replace: bool = False, timeout: float | None = None
    ) -> CashierState:
        """Everything the register shows for ``member``; the session then watches it."""
        return await self._request(
            lambda s: s.cashier_view(member, replace), CashierState, timeout=timeout
        )

    # ------------------------------------------------------------------ the wallet

    async def wallet(
        self, member: str, history: int = WALLET_HISTORY_DEFAULT, *, timeout: float | None = None
    ) -> WalletView:
        """The whole wallet view; the session then watches ``member``."""
        return await self._request(lambda s: s.wallet(member, history), WalletView, timeout=timeout)

    async def codes(
        self,
        member: str,
        status: CodeStatus = "all",
        before: str | None = None,
        limit: int = CODES_DEFAULT_PAGE,
        *,
        timeout: float | None = None,
    ) -> Codes:
        return await self._request(
            lambda s: s.codes(member, status, before, limit), Codes, timeout=timeout
        )

    async def update_profile(
        self,
        member: str,
        *,
        name: str | None = None,
        birthday: Birthday | None = None,
        consent: Consents | None = None,
        preferred_store: str | None = None,
        clear_preferred_store: bool = False,
        time_zone: str | None = None,
        clear_time_zone: bool = False,
        timeout: float | None = None,
    ) -> Profile:
        return await self._request(
            lambda s: s.update_profile(
                member,
                name,
                birthday,
                consent,
                preferred_store,
                clear_preferred_store,
                time_zone,
                clear_time_zone,
            ),
            Profile,
            timeout=timeout,
        )

    async def verify_contact(
        self,
        member: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        timeout: float | None = None,
    ) -> VerificationSent:
        """Send a one-time code to a new address. Not sent twice by the client: a lost reply
        raises ``ConnectionLost`` (ask again if no code arrived)."""
        return await self._request(
            lambda s: s.verify_contact(member, email, phone),
            VerificationSent,
            repeatable=False,
            timeout=timeout,
        )

    async def confirm_contact(
        self,
        member: str,
        code: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        timeout: float | None = None,
    ) -> Profile:
        """Prove the new address with its code. Sent again after a lost reply: the same code
        answers with the profile as the first did, within the code's lifetime."""
        return await self._request(
            lambda s: s.confirm_contact(member, code, email, phone),
            Profile,
            repeatable=True,
            timeout=timeout,
        )
