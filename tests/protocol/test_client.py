"""The sans-I/O ClientSession: frames out, events in, versions and resume."""

from collections.abc import Callable

import msgspec
import pytest

from protocol import DecodeError, ErrorCode, decode_client, encode
from protocol.client import (
    Changed,
    ClientSession,
    Failed,
    Gap,
    Ignored,
    Reply,
    Resync,
    Stale,
    Welcomed,
)
from protocol.codes import CloseCode
from protocol.messages import (
    Balance,
    BalanceChanged,
    Cause,
    Commit,
    Error,
    GetBalance,
    GetOutcome,
    Hello,
    HoldState,
    Outcome,
    Ping,
    Pong,
    Refresh,
    Release,
    Reserve,
    Result,
    Sale,
    SaleLine,
    SaleReceipt,
    Scope,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    Welcome,
)
from protocol.messages import Resync as ResyncFrame

M = "m-42"


def bal(version: int, member: str = M, posted: int = 100) -> Balance:
    return Balance(member=member, posted=posted, held=0, available=posted, version=version)


def changed(version: int, member: str = M) -> BalanceChanged:
    return BalanceChanged(
        member=member,
        posted=version * 10,
        held=0,
        available=version * 10,
        version=version,
        cause=Cause(kind="earn", op=f"op-{version}"),
        at=1_700_000_000_000 + version,
    )


def welcome(rid: str) -> bytes:
    scope = Scope(kind="pos", merchant="acme", store="s-1", terminal="t-1")
    return encode(
        Welcome(id=rid, version=1, session="s", node="gw-1", heartbeat_ms=25_000, scope=scope)
    )


def result(rid: str, data: msgspec.Struct) -> bytes:
    return encode(Result(id=rid, data=data))  # type: ignore[arg-type]


def test_request_ids_count_up_with_prefix() -> None:
    s = ClientSession(prefix="t7-")
    assert decode_client(s.ping()).id == "t7-1"
    assert decode_client(s.ping()).id == "t7-2"
    assert set(s.pending) == {"t7-1", "t7-2"}


@pytest.mark.parametrize("prefix", ["bad prefix", "x" * 45, "é"])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        ClientSession(prefix=prefix)


def test_builders_make_valid_frames() -> None:
    s = ClientSession()
    line = SaleLine(sku="sku-1", qty=1, price=500)
    built = [
        (s.hello("tok"), Hello),
        (s.ping(), Ping),
        (s.refresh("tok"), Refresh),
        (s.subscribe(M, since=3), Subscribe),
        (s.unsubscribe(M), Unsubscribe),
        (s.balance(M), GetBalance),
        (s.sale("op-1", M, 500, [line]), Sale),
        (s.reserve("op-2", M, 50), Reserve),
        (s.commit("op-3", M, "op-2"), Commit),
        (s.commit("op-4", M, "op-2", points=20), Commit),
        (s.release("op-5", M, "op-2"), Release),
        (s.outcome("op-1"), GetOutcome),
    ]
    for data, cls in built:
        frame = decode_client(data)
        assert type(frame) is cls
        assert s.pending[frame.id] == frame
    hello = decode_client(built[0][0])
    assert isinstance(hello, Hello) and hello.versions == [1] and hello.token == "tok"


def test_every_client_command_has_a_builder() -> None:
    """The 25 commands of protocol v1, each built by ClientSession, encoded through its Struct
    and decoded back as the server decodes it."""
    from typing import get_args

    from protocol.loyalty import (
        CashierView,
        Enrol,
        GetHistory,
        IssuePass,
        Lookup,
        RedeemReward,
        Return,
        ReturnLine,
        UseCode,
        VoidCode,
    )
    from protocol.messages import ClientFrame
    from protocol.wallet import (
        Birthday,
        ConfirmContact,
        Consents,
        GetCodes,
        GetWallet,
        UpdateProfile,
        VerifyContact,
    )

    s = ClientSession(prefix="pos7-")
    built = {
        Hello: s.hello("tok", client="pos/7.2"),
        Ping: s.ping(),
        Refresh: s.refresh("tok"),
        Subscribe: s.subscribe(M, since=3, replace=True, presence=True),
        Unsubscribe: s.unsubscribe(M),
        GetBalance: s.balance(M),
        Sale: s.sale("op-1", M, 500, [SaleLine(sku="latte", qty=2, price=250)]),
        Reserve: s.reserve("op-2", M, 50, ttl_ms=60_000),
        Commit: s.commit("op-3", M, "op-2", points=20),
        Release: s.release("op-4", M, "op-2"),
        GetOutcome: s.outcome("op-1"),
        Enrol: s.enrol(phone="(415) 555-2671", email="ada@example.com", card="c-1", name="Ada"),
        Lookup: s.lookup(qr="eyJ.pass.sig"),
        IssuePass: s.pass_(M),
        GetHistory: s.history(M, before="1187", limit=5),
        RedeemReward: s.redeem_reward("app-7", M, "ten-off"),
        UseCode: s.use_code("op-5", "RW-7KQ2M9XTAB"),
        VoidCode: s.void_code("op-6", "RW-7KQ2M9XTAB"),
        Return: s.return_("op-7", M, "op-1", [ReturnLine(sku="latte", qty=1)], redemption="op-3"),
        CashierView: s.cashier_view(M, replace=True),
        GetWallet: s.wallet(M, history=3),
        GetCodes: s.codes(M, status="used", before="12", limit=5),
        UpdateProfile: s.update_profile(
            M,
            name="Ada",
            birthday=Birthday(month=3, day=14),
            consent=Consents(email=True, sms=False),
            preferred_store="s-1",
        ),
        VerifyContact: s.verify_contact(M, email="ada@example.org"),
        ConfirmContact: s.confirm_contact(M, "493027", email="ada@example.org"),
    }
    assert set(built) == set(get_args(ClientFrame)) and len(built) == 25
    for cls, data in built.items():
        frame = decode_client(data)
        assert type(frame) is cls, cls
        assert s.pending[frame.id] == frame
        assert encode(frame) == data  # what was sent is exactly the Struct's encoding
    ret = decode_client(built[Return])
    assert isinstance(ret, Return) and ret.lines == [ReturnLine(sku="latte", qty=1)]
    profile = decode_client(built[UpdateProfile])
    assert isinstance(profile, UpdateProfile) and profile.birthday == Birthday(month=3, day=14)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: s.enrol(phone="1"),  # under 3 characters
        lambda s: s.history(M, limit=0),
        lambda s: s.history(M, before="not-a-cursor"),
        lambda s: s.redeem_reward("bad op", M, "r"),
        lambda s: s.use_code("op", ""),
        lambda s: s.return_("op", M, "sale", amount=-1),
        lambda s: s.wallet(M, history=1000),
        lambda s: s.codes(M, limit=0),
        lambda s: s.update_profile(M, name="x" * 201),
        lambda s: s.confirm_contact(M, "12345", email="a@b.c"),  # five digits
        lambda s: s.pass_("m 42"),
    ],
)
def test_loyalty_and_wallet_builders_refuse_what_the_server_would(
    build: Callable[[ClientSession], bytes],
) -> None:
    s = ClientSession()
    with pytest.raises(DecodeError) as info:
        build(s)
    assert info.value.code is ErrorCode.INVALID_FIELD
    assert not s.pending  # nothing registered


@pytest.mark.parametrize(
    "build",
    [
        lambda s: s.lookup(),
        lambda s: s.lookup(phone="+14155552671", email="a@b.c"),
        lambda s: s.verify_contact(M),
        lambda s: s.confirm_contact(M, "123456", email="a@b.c", phone="+14155552671"),
    ],
)
def test_exactly_one_identity_is_asked_for(build: Callable[[ClientSession], bytes]) -> None:
    with pytest.raises(ValueError):
        build(ClientSession())


def test_a_wallet_reply_subscribes_and_loyalty_replies_advance_versions() -> None:
    """The wallet subscribes the session on the server (as cashier_view does): resume() must
    re-subscribe it; the balances inside enrol/lookup, code and return replies move versions."""
    from protocol.loyalty import (
        History,
        Member,
        MemberBalance,
        ReturnReceipt,
        RewardCode,
        TierInfo,
    )
    from protocol.wallet import Codes, Profile, WalletView

    def mb(version: int) -> MemberBalance:
        return MemberBalance(posted=5, held=0, available=5, version=version)

    s = ClientSession()
    rid = decode_client(s.enrol(phone="+14155552671")).id
    s.receive(result(rid, Member(member=M, created=True, balance=mb(2))))
    assert s.last_versions[M] == 2 and s.subscriptions == frozenset()
    rid = decode_client(s.wallet(M)).id
    view = WalletView(
        member=Member(member=M),
        balance=mb(4),
        tier=TierInfo(tier=""),
        rewards=[],
        codes=Codes(member=M, codes=[]),
        offers=[],
        history=History(member=M, purchases=[]),
        profile=Profile(member=M),
        seq=3,
    )
    s.receive(result(rid, view))
    assert s.subscriptions == {M} and s.last_versions[M] == 4
    assert [decode_client(f).since for f in s.resume()] == [4]  # type: ignore[union-attr]
    code = RewardCode(
        code="RW-1", reward="r", member=M, status="issued", points=5, expires_at=1, balance=mb(5)
    )
    rid = decode_client(s.redeem_reward("op-r", M, "r")).id
    s.receive(result(rid, code))
    assert s.last_versions[M] == 5
    receipt = ReturnReceipt(
        op="op-ret",
        sale="op-1",
        member=M,
        clawback=1,
        restored=0,
        applied=-1,
        uncollected=0,
        breakdown=[],
        balance=mb(7),
    )
    rid = decode_client(s.return_("op-ret", M, "op-1")).id
    s.receive(result(rid, receipt))
    assert s.last_versions[M] == 7
    # a watched member: the return's reply skipped 6, whose push is still to come
    assert s.receive(encode(changed(6))) == [Changed(changed(6), filled=True)]


def test_builder_refuses_what_the_server_would() -> None:
    s = ClientSession()
    with pytest.raises(DecodeError) as info:
        s.reserve("op-1", M, 0)
    assert info.value.code is ErrorCode.INVALID_FIELD
    with pytest.raises(DecodeError):
        s.balance("bad member")
    assert not s.pending


def test_send_refuses_a_pending_id() -> None:
    s = ClientSession()
    s.send(Ping(id="x"))
    with pytest.raises(ValueError):
        s.send(Ping(id="x"))


def test_welcome_authenticates() -> None:
    s = ClientSession()
    rid = decode_client(s.hello("tok")).id
    [event] = s.receive(welcome(rid))
    assert isinstance(event, Welcomed) and event.welcome.heartbeat_ms == 25_000
    assert s.welcome == event.welcome
    assert not s.pending


def test_reply_is_correlated() -> None:
    s = ClientSession()
    request = decode_client(s.ping())
    assert s.receive(result(request.id, Pong())) == [Reply(request, Pong())]
    assert not s.pending
    # a reply whose id is not pending still comes through, without its request
    assert s.receive(result("zz", Pong())) == [Reply(None, Pong())]


def test_errors_are_correlated() -> None:
    s = ClientSession()
    request = decode_client(s.reserve("op-1", M, 50))
    err = Error(id=request.id, code="timeout", message="later", retryable=True)
    [event] = s.receive(encode(err))
    assert isinstance(event, Failed) and event.request == request and event.retryable
    anonymous = Error(code="malformed_frame", message="?")
    [event] = s.receive(encode(anonymous))
    assert event == Failed(None, anonymous) and not event.retryable


def test_pushes_in_order_gaps_and_stale() -> None:
    s = ClientSession()
    assert s.receive(encode(changed(5))) == [Changed(changed(5))]  # first one: baseline
    assert s.receive(encode(changed(6))) == [Changed(changed(6))]
    assert s.receive(encode(changed(9))) == [Gap(M, 7, 9), Changed(changed(9))]
    assert s.receive(encode(changed(9))) == [Stale(M, 9, 9)]  # duplicate
    # a late 8 is one of the versions the gap left missing: recovered, not stale
    assert s.receive(encode(changed(8))) == [Changed(changed(8), filled=True)]
    assert s.receive(encode(changed(8))) == [Stale(M, 8, 9)]  # now a duplicate
    assert s.receive(encode(changed(4))) == [Stale(M, 4, 9)]  # older than anything missing
    assert s.last_versions == {M: 9}
    other = changed(1, member="m-7")
    assert s.receive(encode(other)) == [Changed(other)]
    assert s.last_versions == {M: 9, "m-7": 1}


def test_subscribed_replays_missed_changes_after_since() -> None:
    s = ClientSession()
    request = decode_client(s.subscribe(M, since=4))
    reply = Subscribed(member=M, balance=bal(6), missed=[changed(5), changed(6)])
    events = s.receive(result(request.id, reply))
    assert events == [Reply(request, reply), Changed(changed(5)), Changed(changed(6))]
    assert s.last_versions[M] == 6
    assert s.subscriptions == {M}


def test_subscribed_missed_with_a_hole_is_a_gap() -> None:
    s = ClientSession()
    request = decode_client(s.subscribe(M, since=4))
    reply = Subscribed(member=M, balance=bal(7), missed=[changed(5), changed(7)])
    events = s.receive(result(request.id, reply))
    assert events[1:] == [Changed(changed(5)), Gap(M, 6, 7), Changed(changed(7))]


def test_subscribed_balance_moves_version_forward_only() -> None:
    s = ClientSession()
    s.receive(encode(changed(10)))
    request = decode_client(s.subscribe(M))
    s.receive(result(request.id, Subscribed(member=M, balance=bal(8))))
    assert s.last_versions[M] == 10


def test_subscribed_not_recovered_is_a_resync() -> None:
    s = ClientSession()
    request = decode_client(s.subscribe(M, since=2))
    reply = Subscribed(member=M, balance=bal(40), recovered=False)
    events = s.receive(result(request.id, reply))
    assert events == [Reply(request, reply), Resync(M, bal(40), "not_recovered")]
    assert s.last_versions[M] == 40


def test_resync_frame_sets_the_version() -> None:
    s = ClientSession()
    s.receive(encode(changed(10)))
    frame = ResyncFrame(member=M, balance=bal(7), reason="gap")
    # Versions only grow in the ledger: a lower one is older news (a reply that travelled
    # faster than the fan-out), so the last version does not move back (found in review),
    # and it is not announced as the truth either: v7 shown after v10 (a later review).
    assert s.receive(encode(frame)) == [Stale(M, 7, 10)]
    assert s.last_versions[M] == 10
    assert s.receive(encode(changed(11))) == [Changed(changed(11))]
    s.receive(encode(changed(14)))  # a gap: 12 and 13 missing ...
    s.receive(encode(ResyncFrame(member=M, balance=bal(14), reason="gap")))
    assert s.receive(encode(changed(12))) == [Stale(M, 12, 14)]  # ... given up by the resync


def test_a_not_recovered_resume_older_than_a_version_seen_is_stale() -> None:
    """Found in review: a ``subscribed`` reply with recovered=false and a balance older than
    the last version seen was announced as the truth (``Resync``), as older resync frames
    were."""
    s = ClientSession()
    s.receive(encode(changed(10)))
    request = decode_client(s.subscribe(M, since=10))
    reply = Subscribed(member=M, balance=bal(8), recovered=False)
    assert s.receive(result(request.id, reply)) == [Reply(request, reply), Stale(M, 8, 10)]
    assert s.last_versions[M] == 10


def test_an_older_resync_keeps_asking_for_newer_missing_versions() -> None:
    """Found in review: a resync older than an open gap dropped every hole, so ``refill`` no
    longer asked for the newer missing versions and their late pushes came out stale."""
    s = ClientSession()
    request = decode_client(s.subscribe(M))
    s.receive(result(request.id, Subscribed(member=M, balance=bal(17))))
    assert s.receive(encode(changed(20))) == [Gap(M, 18, 20), Changed(changed(20))]
    assert s.receive(encode(ResyncFrame(member=M, balance=bal(15), reason="gap"))) == [
        Stale(M, 15, 20)
    ]
    assert decode_client(s.refill(M)).since == 17  # type: ignore[union-attr]
    assert s.receive(encode(changed(18))) == [Changed(changed(18), filled=True)]
    # a resync at 18 gives up 18 (already here) but not 19
    s.receive(encode(ResyncFrame(member=M, balance=bal(18), reason="gap")))
    assert s.receive(encode(changed(19))) == [Changed(changed(19), filled=True)]


def test_balances_inside_results_advance_versions() -> None:
    s = ClientSession()
    rid = decode_client(s.balance(M)).id
    s.receive(result(rid, bal(3)))
    assert s.last_versions[M] == 3
    receipt = SaleReceipt(op="op-1", member=M, points=5, breakdown=[], balance=bal(4))
    rid = decode_client(s.sale("op-1", M, 500)).id
    s.receive(result(rid, receipt))
    assert s.last_versions[M] == 4
    hold = HoldState(op="h", hold="h", member=M, status="active", points=5, balance=bal(5))
    rid = decode_client(s.reserve("h", M, 5)).id
    s.receive(result(rid, hold))
    assert s.last_versions[M] == 5
    rid = decode_client(s.outcome("op-1")).id
    s.receive(result(rid, Outcome(op="op-1", ok=True, data=receipt)))
    assert s.last_versions[M] == 5  # an old snapshot does not move it back
    rid = decode_client(s.outcome("op-9")).id
    s.receive(result(rid, Outcome(op="op-9", ok=True, data=bal(6))))
    assert s.last_versions[M] == 6


def test_unsubscribed_ends_the_subscription() -> None:
    s = ClientSession()
    rid = decode_client(s.subscribe(M)).id
    s.receive(result(rid, Subscribed(member=M, balance=bal(1))))
    rid = decode_client(s.unsubscribe(M)).id
    s.receive(result(rid, Unsubscribed(member=M)))
    assert s.subscriptions == frozenset()


def test_reconnect_resume_and_retry() -> None:
    s = ClientSession()
    s.receive(welcome(decode_client(s.hello("tok")).id))
    for member, version in ((M, 12), ("m-7", 3)):
        rid = decode_client(s.subscribe(member)).id
        s.receive(result(rid, Subscribed(member=member, balance=bal(version, member=member))))
    sale = decode_client(s.sale("op-1", M, 500))
    assert isinstance(sale, Sale)
    ping = decode_client(s.ping())

    assert s.connection_lost() == [sale, ping]
    assert s.welcome is None and not s.pending

    frames = [decode_client(f) for f in s.resume()]
    assert [(f.member, f.since) for f in frames if isinstance(f, Subscribe)] == [
        (M, 12),
        ("m-7", 3),
    ]
    again = decode_client(s.retry(sale))
    assert isinstance(again, Sale) and again.op == sale.op and again.id != sale.id
    assert msgspec.structs.replace(again, id=sale.id) == sale
    assert s.pending[again.id] == again


def test_should_reconnect() -> None:
    assert ClientSession.should_reconnect(CloseCode.DRAINING)
    assert ClientSession.should_reconnect(CloseCode.SLOW_CONSUMER)
    assert ClientSession.should_reconnect(1006)
    assert not ClientSession.should_reconnect(CloseCode.TOKEN_EXPIRED)
    assert not ClientSession.should_reconnect(CloseCode.PROTOCOL_VIOLATION)


def test_bad_server_frames_are_ignored() -> None:
    s = ClientSession()
    [event] = s.receive(b'{"type":"announcement","id":"1","text":"hi"}')
    assert event == Ignored(ErrorCode.UNKNOWN_TYPE, "unknown type 'announcement'")
    [event] = s.receive(b"not json")
    assert isinstance(event, Ignored) and event.code is ErrorCode.MALFORMED_FRAME
    [event] = s.receive(b'{"type":"result","id":"1"}')
    assert isinstance(event, Ignored) and event.code is ErrorCode.INVALID_FIELD


def test_unknown_fields_are_ignored() -> None:
    s = ClientSession()
    rid = decode_client(s.ping()).id
    data = b'{"type":"result","id":"%s","data":{"kind":"pong","extra":1},"new":true}' % rid.encode()
    assert s.receive(data) == [Reply(Ping(id=rid), Pong())]


def test_other_pushes_are_handed_to_the_application() -> None:
    from protocol.client import ClientSession, Pushed
    from protocol.codec import encode
    from protocol.messages import Notice

    session = ClientSession()
    frame = Notice(notice="n1", merchant="m", kind="offer", payload={"sku": "beans"})
    events = session.receive(encode(frame))
    assert len(events) == 1 and isinstance(events[0], Pushed)
    assert events[0].frame == frame


# --------------------------------------------------------------------------- found in review


def _subscribed_reply(s: ClientSession, raw: bytes, version: int, member: str = M, **kw) -> list:
    rid = decode_client(raw).id
    return s.receive(result(rid, Subscribed(member=member, balance=bal(version, member), **kw)))


def test_replace_and_presence_are_kept_for_resume() -> None:
    """A register subscribing each customer with replace piled them all up, and resume()
    re-subscribed every past customer (past the limit, the current one could be refused);
    resume() also dropped presence."""
    s = ClientSession()
    for i in range(20):
        _subscribed_reply(s, s.subscribe(f"c{i}", replace=True, presence=i == 19), 1, f"c{i}")
    assert s.subscriptions == {"c19"}
    (again,) = [decode_client(f) for f in s.resume()]
    assert isinstance(again, Subscribe)
    assert (again.member, again.since, again.presence) == ("c19", 1, True)


def test_cashier_view_subscribes_and_tracks_the_version() -> None:
    """The level-2 view subscribes the session on the server; the client did not know, so
    resume() after a reconnect sent nothing and the register went quiet."""
    from protocol.loyalty import CashierState, Member, MemberBalance, TierInfo

    s = ClientSession()
    _subscribed_reply(s, s.subscribe("old"), 1, "old")
    rid = decode_client(s.cashier_view(M, replace=True)).id
    state = CashierState(
        member=Member(member=M),
        balance=MemberBalance(posted=5, held=0, available=5, version=7),
        tier=TierInfo(tier=""),
        rewards=[],
        codes=[],
        recent=[],
        offers=[],
    )
    s.receive(result(rid, state))
    assert s.subscriptions == {M} and s.last_versions[M] == 7
    assert [decode_client(f).since for f in s.resume()] == [7]  # type: ignore[union-attr]


def test_a_gap_is_refilled_from_its_first_missing_version() -> None:
    """After a gap the last version had moved past it: re-subscribing from it returned
    nothing, and from before it returned the missing changes as Stale."""
    s = ClientSession()
    _subscribed_reply(s, s.subscribe(M), 10)
    assert s.receive(encode(changed(13))) == [Gap(M, 11, 13), Changed(changed(13))]
    refill = decode_client(s.refill(M))
    assert isinstance(refill, Subscribe) and refill.since == 10
    events = _subscribed_reply(
        s, encode(refill), 13, missed=[changed(11), changed(12), changed(13)]
    )
    assert events[1:] == [
        Changed(changed(11), filled=True),
        Changed(changed(12), filled=True),
        Stale(M, 13, 13),
    ]
    assert [decode_client(f).since for f in s.resume()] == [13]  # type: ignore[union-attr]


def test_merged_and_refused_members_are_not_resumed() -> None:
    from protocol.loyalty import MemberMerged

    s = ClientSession()
    for m in ("dup", "gone", "busy"):
        _subscribed_reply(s, s.subscribe(m), 1, m)
    s.receive(encode(MemberMerged(member="dup", into="keep", at=1)))
    for member, code, retryable in (
        ("gone", "member_not_found", False),
        ("busy", "unavailable", True),
    ):
        rid = decode_client(s.subscribe(member)).id
        s.receive(encode(Error(id=rid, code=code, message="", retryable=retryable)))
    assert s.subscriptions == {"busy"}  # a retryable refusal keeps it


def test_an_undecodable_reply_still_settles_its_command() -> None:
    """A result the client could not decode (a newer kind or enum value) left its command
    pending for ever."""
    s = ClientSession()
    raw = s.reserve("h-1", M, 5)
    rid = decode_client(raw).id
    reply = (
        b'{"type":"result","id":"' + rid.encode() + b'","data":{"kind":"hold","op":"h-1",'
        b'"hold":"h-1","member":"m-42","status":"pending","points":5}}'
    )
    (event,) = s.receive(reply)
    assert isinstance(event, Ignored) and isinstance(event.request, Reserve)
    assert rid not in s.pending


def test_a_huge_gap_is_remembered_by_where_it_starts() -> None:
    """Listing every missing version of a gap of 10**9 would take gigabytes."""
    s = ClientSession()
    _subscribed_reply(s, s.subscribe(M), 10)
    assert s.receive(encode(changed(10**9))) == [Gap(M, 11, 10**9), Changed(changed(10**9))]
    assert decode_client(s.refill(M)).since == 10  # type: ignore[union-attr]
    assert s.receive(encode(changed(12))) == [Stale(M, 12, 10**9)]  # not tracked one by one
    s.receive(encode(ResyncFrame(member=M, balance=bal(10**9), reason="gap")))
    assert decode_client(s.refill(M)).since == 10**9  # type: ignore[union-attr]


def test_many_gaps_do_not_pile_up_holes() -> None:
    """Each gap was bounded, their total was not: 2,000 gaps of 1,000 made 2,000,000 ints."""
    s = ClientSession()
    _subscribed_reply(s, s.subscribe(M), 0)
    version = 0
    for _ in range(50):
        version += 101
        s.receive(encode(changed(version)))
    assert sum(len(h) for h in s._holes.values()) <= 1_000
    assert decode_client(s.refill(M)).since == 0  # type: ignore[union-attr]  # the first missing


def test_a_reply_ahead_of_the_pushes_leaves_the_skipped_versions_to_come() -> None:
    """The sale's reply (version 13) left the node before the fan-out brought another
    register's change (12): that change came as Stale and its cause was lost to the app."""
    s = ClientSession()
    _subscribed_reply(s, s.subscribe(M), 11)
    receipt = SaleReceipt(op="op-13", member=M, points=5, breakdown=[], balance=bal(13))
    rid = decode_client(s.sale("op-13", M, 500)).id
    s.receive(result(rid, receipt))
    assert s.last_versions[M] == 13
    # cut off before the push of 12: the resume asks from before it
    assert decode_client(s.refill(M)).since == 11  # type: ignore[union-attr]
    assert s.receive(encode(changed(12))) == [Changed(changed(12), filled=True)]
    assert s.receive(encode(changed(13))) == [Stale(M, 13, 13)]  # the reply told it already
    assert [decode_client(f).since for f in s.resume()] == [13]  # type: ignore[union-attr]
    # on a member not watched, a reply only moves the last version: no push is to come
    other = "m-7"
    rid = decode_client(s.balance(other)).id
    s.receive(result(rid, bal(2, other)))
    rid = decode_client(s.balance(other)).id
    s.receive(result(rid, bal(9, other)))
    assert s.last_versions[other] == 9
    assert s.receive(encode(changed(5, other))) == [Stale(other, 5, 9)]
