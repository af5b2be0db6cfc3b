"""loyalty_client.Client against real gateway nodes: the handshake, every command, pushes,
reconnects with resume to another node, token refresh and expiry, timeouts settled by the
same op, a crash settled from the journal, and the client distribution's isolation."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from loyalty_client import (
    Backoff,
    Changed,
    Client,
    CommandError,
    Connected,
    ConnectionClosed,
    Disconnected,
    OutcomeUnknown,
    Settled,
    SqliteJournal,
)

from gateway import auth
from gateway.settings import NotifySettings
from protocol.codes import CloseCode, ErrorCode
from protocol.loyalty import (
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
    SaleLine,
    SaleReceipt,
    Subscribed,
    Unsubscribed,
)
from protocol.wallet import Birthday, Codes, Consents, Profile, VerificationSent, WalletView
from tests.conftest import REDIS_URL, TIME_FACTOR, unique
from tests.loyalty_support import add_reward, phone
from tests.servers import SmtpServer
from tests.support import (
    NodeProcess,
    RunningNode,
    app_token,
    pos_token,
    running_node,
    settings_for,
)


def pos_tokens(merchant: str, ttl: float = 3600) -> Callable[[], str]:
    return lambda: pos_token(merchant, "s1", "t1", ttl)


def app_tokens(merchant: str, member: str, ttl: float = 3600) -> Callable[[], str]:
    return lambda: app_token(merchant, member, ttl)


async def next_event(client: Client, kind: type, timeout: float = 10.0) -> Any:
    """The next event of type ``kind`` (others are skipped)."""
    async with asyncio.timeout(timeout * TIME_FACTOR):
        async for event in client.events():
            if isinstance(event, kind):
                return event
    raise AssertionError("the client stopped")


async def changes_until(client: Client, member: str, version: int) -> list[int]:
    """The versions of ``member`` that came as Changed events, until ``version``."""
    seen: list[int] = []
    while version not in seen:
        event = await next_event(client, Changed)
        if event.change.member == member:
            seen.append(event.change.version)
    return seen


@pytest.fixture
def smtp() -> Any:
    with SmtpServer() as server:
        yield server


@pytest.fixture
async def node(pg_dsn: str, redis_prefix: str, smtp: SmtpServer) -> AsyncIterator[RunningNode]:
    """A node in this process that sends verification codes to the test's SMTP server."""
    base = settings_for(pg_dsn, REDIS_URL, "pyc")
    settings = dataclasses.replace(base, notify=NotifySettings(smtp_url=smtp.url))
    async with running_node(settings, redis_prefix) as rn:
        yield rn


@pytest.fixture
async def quick_node(pg_dsn: str, redis_prefix: str) -> AsyncIterator[RunningNode]:
    """A node whose tokens expire on time (no leeway) and whose heartbeat is 0.5 s."""
    base = settings_for(pg_dsn, REDIS_URL, "pyq", heartbeat=0.5)
    settings = dataclasses.replace(base, auth=dataclasses.replace(base.auth, leeway=0.0))
    async with running_node(settings, redis_prefix) as rn:
        yield rn


# --------------------------------------------------------------------------- the basics


async def test_connect_hello_welcome(node: RunningNode, merchant: str) -> None:
    async def token() -> str:  # an async provider is awaited
        return pos_token(merchant, "s1", "t1")

    async with Client(node.url, token, prefix="t1-") as client:
        welcome = client.welcome
        assert welcome is not None and welcome.node == "pyc" and welcome.version == 1
        assert (welcome.scope.kind, welcome.scope.merchant) == ("pos", merchant)
        assert (welcome.scope.store, welcome.scope.terminal) == ("s1", "t1")
        assert isinstance(await client.ping(), Pong)
        assert client.connected and client.connections == 1
        event = await next_event(client, Connected)
        assert event.welcome == welcome and not event.resumed and event.url == node.url


async def test_every_command_round_trips(
    node: RunningNode, merchant: str, pg_dsn: str, smtp: SmtpServer
) -> None:
    await add_reward(pg_dsn, merchant, "ten-off", 50, 1000, "$10 off")
    async with Client(node.url, pos_tokens(merchant), prefix="t1-") as till:
        await _every_command(till, node, merchant, smtp)


async def _every_command(till: Client, node: RunningNode, merchant: str, smtp: SmtpServer) -> None:
    number = phone()
    enrolled = await till.enrol(number, f"{unique('e')}@example.com", name="Ada")
    assert isinstance(enrolled, Member) and enrolled.created
    m = enrolled.member
    again = await till.enrol(number)
    assert again.member == m and not again.created  # absent in the frame, False here
    assert (await till.lookup(number)).member == m
    assert isinstance(await till.subscribe(m), Subscribed)
    assert isinstance(await till.balance(m), Balance)

    sale = await till.sale(m, 125_500, [SaleLine(sku="beans", qty=2, price=62_750)])
    assert isinstance(sale, SaleReceipt) and sale.points == 1255
    hold = await till.reserve(m, 20)
    assert isinstance(hold, HoldState) and hold.status == "active"
    done = await till.commit(m, hold.hold, 15)
    assert (done.status, done.committed) == ("committed", 15)
    other = await till.reserve(m, 5)
    assert (await till.release(m, other.hold)).status == "released"
    told = await till.outcome(sale.op)
    assert isinstance(told, Outcome) and told.ok and told.data == sale
    history = await till.history(m, limit=5)
    assert isinstance(history, History) and [p.op for p in history.purchases] == [sale.op]
    view = await till.cashier_view(m, replace=True)
    assert isinstance(view, CashierState) and view.balance.available == 1240
    ret = await till.return_(m, sale.op, [ReturnLine(sku="beans", qty=1)])
    assert isinstance(ret, ReturnReceipt) and ret.clawback > 0
    assert isinstance(await till.unsubscribe(m), Unsubscribed)
    assert isinstance(await till.refresh(pos_token(merchant, "s1", "t1")), Refreshed)

    async with Client(node.url, app_tokens(merchant, m), prefix="app-") as app:
        await _wallet_commands(app, till, m, smtp)

    # a refusal is a typed error with its stable code; the op is not kept
    with pytest.raises(CommandError) as info:
        await till.reserve(m, 9_999_999)
    assert info.value.code is ErrorCode.INSUFFICIENT_POINTS and not info.value.retryable
    assert till.pending_ops == [] and await till.journal.pending() == []


async def _wallet_commands(app: Client, till: Client, m: str, smtp: SmtpServer) -> None:
    wallet = await app.wallet(m, history=3)
    assert isinstance(wallet, WalletView) and wallet.member.member == m
    card = await app.pass_(m)
    assert isinstance(card, Pass)
    assert (await till.lookup(qr=card.token)).member == m
    code = await app.redeem_reward(m, "ten-off")
    assert isinstance(code, RewardCode) and code.status == "issued"
    used = await till.use_code(code.code)
    assert used.status == "redeemed"
    spare = await app.redeem_reward(m, "ten-off")
    assert (await till.void_code(spare.code)).status == "voided"
    codes = await app.codes(m, status="used")
    assert isinstance(codes, Codes) and [c.code for c in codes.codes] == [code.code]
    profile = await app.update_profile(
        m, birthday=Birthday(month=3, day=14), consent=Consents(email=True)
    )
    assert isinstance(profile, Profile) and profile.birthday == Birthday(month=3, day=14)
    new = f"{unique('n')}@example.org"
    sent = await app.verify_contact(m, email=new)
    assert isinstance(sent, VerificationSent) and sent.contact == "email"
    await asyncio.sleep(0.1)
    (secret,) = smtp.codes_to(new)
    assert (await app.confirm_contact(m, secret, email=new)).email == new


async def test_a_pos_sale_is_pushed_to_the_app(node: RunningNode, merchant: str) -> None:
    async with Client(node.url, pos_tokens(merchant)) as till:
        m = (await till.enrol(phone())).member
        async with Client(node.url, app_tokens(merchant, m)) as app:
            subscribed = await app.subscribe(m)
            assert subscribed.balance.version == 0
            receipt = await till.sale(m, 4_250)
            event = await next_event(app, Changed)
            assert event.change.version == 1 and event.change.available == 42
            assert event.change.cause.op == receipt.op and event.change.cause.kind == "earn"
            assert app.session.last_versions[m] == 1


# --------------------------------------------------------------------------- settling ops


class RowLock:
    """Holds a member's account row locked (as a ledger batch locks it), so the ledger cannot
    answer a command on that member until ``release()``."""

    def __init__(self, pg_dsn: str, member: str) -> None:
        self.pg_dsn, self.member = pg_dsn, member

    async def __aenter__(self) -> RowLock:
        self.conn = await asyncpg.connect(self.pg_dsn)
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute(
            "SELECT 1 FROM accounts WHERE member_id = $1 FOR UPDATE", self.member
        )
        return self

    async def release(self) -> None:
        if not self.conn.is_closed():
            await self.tx.rollback()
            await self.conn.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def purchases(client: Client, member: str) -> list[str]:
    return [p.op for p in (await client.history(member)).purchases]


async def test_a_timed_out_sale_is_sent_again_with_its_op_and_applies_once(
    node: RunningNode, merchant: str, pg_dsn: str
) -> None:
    async with Client(node.url, pos_tokens(merchant), request_timeout=0.4, attempts=6) as till:
        m = (await till.enrol(phone())).member
        async with RowLock(pg_dsn, m) as lock:
            sale = asyncio.create_task(till.sale(m, 5_000, op="till1-000001"))
            await asyncio.sleep(1.0)  # two attempts time out, each sent again with its op
            assert not sale.done() and till.resent >= 2
            await lock.release()
            receipt = await sale
        assert receipt.op == "till1-000001" and receipt.points == 50
        assert (await till.balance(m)).posted == 50  # once
        assert await purchases(till, m) == ["till1-000001"]
        assert await till.journal.pending() == []


async def test_an_op_still_unknown_after_its_attempts_is_settled_in_the_background(
    node: RunningNode, merchant: str, pg_dsn: str
) -> None:
    async with Client(
        node.url, pos_tokens(merchant), request_timeout=0.3, attempts=2, settle_interval=0.3
    ) as till:
        m = (await till.enrol(phone())).member
        async with RowLock(pg_dsn, m) as lock:
            with pytest.raises(OutcomeUnknown) as info:
                await till.sale(m, 7_000, op="till1-000002")
            assert info.value.op == "till1-000002" and till.pending_ops == ["till1-000002"]
            assert [e.op for e in await till.journal.pending()] == ["till1-000002"]
            await lock.release()
        settled = await next_event(till, Settled)
        assert settled.op == "till1-000002" and isinstance(settled.data, SaleReceipt)
        assert settled.data.points == 70 and settled.error is None
        await till.wait_settled(5)
        assert await till.journal.pending() == []
        assert (await till.balance(m)).posted == 70
        assert await purchases(till, m) == ["till1-000002"]


async def test_a_crashed_client_is_settled_by_the_next_one_over_its_journal(
    node: RunningNode, merchant: str, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "till1.db"
    async with Client(node.url, pos_tokens(merchant)) as setup:
        m = (await setup.enrol(phone())).member
    async with RowLock(pg_dsn, m) as lock:
        first = Client(node.url, pos_tokens(merchant), journal=str(path), prefix="a-")
        await first.connect()
        sale = asyncio.create_task(first.sale(m, 3_000, op="till1-000010"))
        await asyncio.sleep(0.3)  # journaled, sent, waiting on the ledger
        sale.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sale
        await first.close()  # the process dies: its socket goes, its journal stays
        del first
        await lock.release()  # the ledger applies the sale the dead client had sent
    # and one journaled just before a crash, never sent
    journal = SqliteJournal(path)
    from protocol.codec import encode
    from protocol.messages import Sale

    await journal.add("till1-000011", encode(Sale(id="x", op="till1-000011", member=m, total=900)))
    assert [e.op for e in await journal.pending()] == ["till1-000010", "till1-000011"]
    await journal.close()

    async with Client(node.url, pos_tokens(merchant), journal=str(path), prefix="b-") as second:
        got = [await next_event(second, Settled), await next_event(second, Settled)]
        assert [s.op for s in got] == ["till1-000010", "till1-000011"]  # in journal order
        assert [s.data.points for s in got] == [30, 9]  # type: ignore[union-attr]
        await second.wait_settled(5)
        assert (await second.balance(m)).posted == 39  # each applied once
        assert sorted(await purchases(second, m)) == ["till1-000010", "till1-000011"]
    reopened = SqliteJournal(path)
    assert await reopened.pending() == []
    await reopened.close()


# --------------------------------------------------------------------------- reconnects


@pytest.mark.slow
async def test_a_killed_node_the_client_resumes_on_the_other_without_missing_a_change(
    pg_dsn: str, redis_prefix: str, merchant: str
) -> None:
    nodes = [NodeProcess(pg_dsn, REDIS_URL, redis_prefix, f"py-{n}") for n in "ab"]
    try:
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        a, b = nodes
        async with Client(b.url, pos_tokens(merchant)) as till:
            m = (await till.enrol(phone())).member
            gate, calls = asyncio.Event(), []

            async def token() -> str:  # the reconnect waits until the sale was made
                calls.append(1)
                if len(calls) > 1:
                    await gate.wait()
                return app_token(merchant, m)

            app = Client([a.url, b.url], token, backoff=Backoff(0.05, 0.3))
            async with app:
                assert app.welcome is not None and app.welcome.node == "py-a"
                await app.subscribe(m)
                await till.sale(m, 1_000)
                await till.sale(m, 2_000)
                assert await changes_until(app, m, 2) == [1, 2]
                a.kill()  # no drain, no close frame
                gone = await next_event(app, Disconnected)
                assert gone.reconnect
                await till.sale(m, 3_000)  # made while the app is away
                gate.set()
                back = await next_event(app, Connected)
                assert back.resumed and back.welcome.node == "py-b" and back.url == b.url
                await till.sale(m, 4_000)
                assert await changes_until(app, m, 4) == [3, 4]  # the missed one, then live
                assert app.session.last_versions[m] == 4
                assert app.session.subscriptions == {m}
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.kill()


async def test_the_token_is_refreshed_before_it_expires(
    quick_node: RunningNode, merchant: str
) -> None:
    minted: list[str] = []

    def token() -> str:
        minted.append(pos_token(merchant, "s1", "t1", ttl=3))
        return minted[-1]

    async with Client(quick_node.url, token) as till:
        session = till.welcome.session  # type: ignore[union-attr]
        await asyncio.sleep(4.5)  # past the first token's exp (no leeway on this node)
        assert len(minted) >= 2  # refreshed, on the same session
        assert isinstance(await till.ping(), Pong)
        assert till.connections == 1 and till.welcome.session == session  # type: ignore[union-attr]


async def test_an_expired_session_comes_back_with_a_new_token(
    quick_node: RunningNode, merchant: str
) -> None:
    minted: list[float] = []
    gate = asyncio.Event()

    async def token() -> str:
        ttl = 2 if not minted else 3600  # the first one expires, the next do not
        minted.append(ttl)
        if len(minted) > 1:
            await gate.wait()  # the reconnect waits until the sale was made
        return pos_token(merchant, "s1", "t1", ttl=ttl)

    async with Client(quick_node.url, pos_tokens(merchant)) as till:
        m = (await till.enrol(phone())).member
        app = Client(quick_node.url, token, refresh_margin=None, backoff=Backoff(0.05, 0.3))
        async with app:
            await app.subscribe(m)
            closed = await next_event(app, Disconnected, timeout=10)
            assert closed.code == CloseCode.TOKEN_EXPIRED and closed.reconnect
            await till.sale(m, 1_500)
            gate.set()
            back = await next_event(app, Connected)
            assert back.resumed and minted == [2, 3600]
            assert await changes_until(app, m, 1) == [1]  # resumed from version 0


async def test_a_terminal_close_stops_the_client(quick_node: RunningNode, merchant: str) -> None:
    bad = auth.mint_pos("another-secret-of-at-least-32-bytes!!", merchant, "s1", "t1")
    client = Client(quick_node.url, lambda: bad)
    with pytest.raises(ConnectionClosed) as info:
        await client.connect(timeout=10)
    assert info.value.code == CloseCode.TOKEN_INVALID
    with pytest.raises(ConnectionClosed):
        await client.ping()
    await client.close()


async def test_a_silent_node_is_left_after_the_liveness_bound(
    quick_node: RunningNode, merchant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing arrives (no frame, no ping): after liveness x heartbeat the client drops the
    connection and comes back, on a new session."""
    import aiohttp

    async with Client(quick_node.url, pos_tokens(merchant), backoff=Backoff(0.05, 0.3)) as c:
        first = c.welcome.session  # type: ignore[union-attr]
        real = aiohttp.ClientWebSocketResponse.receive
        mute = True

        async def deaf(self: aiohttp.ClientWebSocketResponse, timeout: float | None = None) -> Any:
            while mute:  # the line is silent: nothing is read
                await asyncio.sleep(timeout or 0.05)
                raise TimeoutError
            return await real(self, timeout)

        monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "receive", deaf)
        gone = await next_event(c, Disconnected, timeout=5)
        assert gone.code is None and "nothing received" in gone.reason
        mute = False
        back = await next_event(c, Connected)
        assert back.resumed and back.welcome.session != first
