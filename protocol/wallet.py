"""The shopper's wallet: what an app or web session shows of its own member, in one request,
then live; the profile and its verified contacts.

Like ``protocol.loyalty``, these Structs join the ``ClientFrame``, ``ResultData`` and
``ServerFrame`` unions of ``protocol.messages``, and carry their own base classes.

Live changes: the balance comes as ``balance_changed`` (versioned, as for every watcher); a
member event (``tier_changed``, ``code_changed``, ``profile_changed``, ``offers_changed``,
``merged``) carries
``seq``, one more than the member's previous event. The ``wallet`` reply says the ``seq`` it is
current at: an event whose ``seq`` is not the next one (one was missed), a ``refetch`` push,
or a new session, means "ask for the wallet again", never a silently stale view.
"""

from typing import Annotated, Literal

import msgspec

from protocol.limits import Id, RequestId, Text
from protocol.loyalty import (
    Email,
    History,
    Member,
    MemberBalance,
    Offer,
    PageSize,
    Phone,
    RewardCode,
    RewardOption,
    TargetedOffer,
    TierInfo,
)

#: Codes one page of ``codes`` lists at most, and by default.
CODES_MAX_PAGE = 100
CODES_DEFAULT_PAGE = 20
#: Purchases the wallet view carries by default (read on with ``history``).
WALLET_HISTORY_DEFAULT = 10
#: Digits of a contact verification code.
VERIFICATION_DIGITS = 6

#: A codes page cursor: at most 18 digits.
CodesCursor = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,18}$(?!\n)")]
CodesPage = Annotated[int, msgspec.Meta(ge=1, le=CODES_MAX_PAGE)]
Month = Annotated[int, msgspec.Meta(ge=1, le=12)]
Day = Annotated[int, msgspec.Meta(ge=1, le=31)]
Year = Annotated[int, msgspec.Meta(ge=1900, le=2100)]
VerificationCode = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$(?!\n)")]
#: An IANA time zone name (``Europe/Paris``, ``America/Argentina/Buenos_Aires``, ``UTC``): the
#: shape here; a name the server's time zone database does not hold is ``time_zone_unknown``.
TimeZone = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$(?!\n)",
        max_length=64,
        description="An IANA time zone name (Europe/Paris, America/New_York, UTC); one the "
        "server does not know is refused with time_zone_unknown.",
    ),
]
CodeStatus = Literal["active", "used", "expired", "voided", "all"]


class _Command(
    msgspec.Struct, kw_only=True, frozen=True, tag_field="type", forbid_unknown_fields=True
):
    """A field the command does not define is refused (``invalid_field``): a client must not
    believe it sent something the server ignored."""


class _Push(msgspec.Struct, kw_only=True, frozen=True, tag_field="type", omit_defaults=True):
    pass


class _Data(msgspec.Struct, kw_only=True, frozen=True, tag_field="kind", omit_defaults=True):
    pass


class _Item(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    pass


class _Input(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


# --------------------------------------------------------------------------- shared items


class Birthday(_Input, frozen=True):
    """A date of birth: month and day (for the birthday reward), and the year if given. A day
    the month does not have (31 April, 29 February of a year that is not a leap year, 30
    February) is refused with ``invalid_field``."""

    month: Month
    day: Day
    year: Year | None = None


class Consents(_Input, frozen=True):
    """Marketing consent per channel; a channel left out keeps its consent."""

    email: bool | None = None
    sms: bool | None = None


class Consent(_Item, frozen=True):
    """One channel's consent: granted or not, when and through which channel it was last set
    (``at`` 0 and ``source`` "" when it never was)."""

    granted: bool = False
    at: int = 0
    source: str = ""


class ConsentState(_Item, frozen=True):
    email: Consent = msgspec.field(default_factory=Consent)
    sms: Consent = msgspec.field(default_factory=Consent)


# --------------------------------------------------------------------------- client -> server


class GetWallet(_Command, tag="wallet", frozen=True):
    """Everything the wallet shows for ``member``, in one request: balance, tier and progress,
    the reward catalogue with what the member can afford, its codes, its offers, its recent
    purchases and its profile. The session is then subscribed to the member: later changes
    arrive as pushes (see the module doc)."""

    id: RequestId
    member: Id
    history: PageSize = WALLET_HISTORY_DEFAULT
    """Purchases to include (the newest first; read on with ``history``)."""


class GetCodes(_Command, tag="codes", frozen=True):
    """The member's reward codes, newest first: ``active`` (issued, usable), ``used``,
    ``expired``, ``voided`` or ``all``. Pass ``before`` = the previous page's ``next``."""

    id: RequestId
    member: Id
    status: CodeStatus = "all"
    before: CodesCursor | None = None
    limit: CodesPage = CODES_DEFAULT_PAGE


class UpdateProfile(_Command, tag="update_profile", frozen=True):
    """Change what is given of the member's profile (a field left out keeps its value). The
    email and phone are changed by ``verify_contact`` and ``confirm_contact``."""

    id: RequestId
    member: Id
    name: Text | None = None
    birthday: Birthday | None = None
    consent: Consents | None = None
    preferred_store: Id | None = None
    clear_preferred_store: bool = False
    """Forget the preferred store (``preferred_store`` must then be absent)."""
    time_zone: TimeZone | None = None
    """The member's own time zone (a birthday reward may be given on the day there)."""
    clear_time_zone: bool = False
    """Forget the time zone (``time_zone`` must then be absent)."""


class VerifyContact(_Command, tag="verify_contact", frozen=True):
    """Send a one-time code to a new email address or phone number of the member (exactly one
    of them); ``confirm_contact`` with that code makes it the member's."""

    id: RequestId
    member: Id
    email: Email | None = None
    phone: Phone | None = None


class ConfirmContact(_Command, tag="confirm_contact", frozen=True):
    """Prove the new address with the code it received: it replaces the member's address of
    that kind, for every channel (the old one no longer finds the member). The same right code
    again within its lifetime answers with the profile and changes nothing (safe to resend)."""

    id: RequestId
    member: Id
    code: VerificationCode
    email: Email | None = None
    phone: Phone | None = None


# --------------------------------------------------------------------------- server -> client


class Profile(_Data, tag="profile", frozen=True):
    member: str
    name: str = ""
    email: str | None = None
    phone: str | None = None
    """E.164."""
    birthday: Birthday | None = None
    consent: ConsentState = msgspec.field(default_factory=ConsentState)
    preferred_store: str | None = None
    tier: str = ""
    time_zone: str | None = None
    """The member's own IANA time zone, if given."""


class Codes(_Data, tag="codes", frozen=True):
    member: str
    codes: list[RewardCode]
    next: str | None = None
    """Cursor of the next (older) page; absent on the last page."""


class WalletView(_Data, tag="wallet", frozen=True):
    member: Member
    balance: MemberBalance
    tier: TierInfo
    rewards: list[RewardOption]
    codes: Codes
    offers: list[Offer]
    history: History
    profile: Profile
    seq: int = 0
    """The member events' ``seq`` this view is current at (see the module doc)."""
    subscribed: bool = True
    targeted: list[TargetedOffer] = msgspec.field(default_factory=list)
    """The member's targeted offers (every channel: the app shows the store's too)."""


class VerificationSent(_Data, tag="verification", frozen=True):
    """A code was sent (to ``to``, masked); it is valid until ``expires_at`` and for a few
    attempts."""

    contact: Literal["email", "phone"]
    to: str
    expires_at: int


class CodeChanged(_Push, tag="code_changed", frozen=True):
    """A code of ``member`` was issued, used, voided (pushed to the sessions watching it)."""

    member: str
    code: RewardCode
    seq: int = 0


class ProfileChanged(_Push, tag="profile_changed", frozen=True):
    """The profile of ``member`` changed (any channel)."""

    member: str
    profile: Profile
    seq: int = 0


class OffersChanged(_Push, tag="offers_changed", frozen=True):
    """The targeted offers of ``member`` changed (it entered or left a segment an offer
    targets, an offer listing it was created, edited or withdrawn, it used one): ``targeted``
    is the whole list now, for every channel (a register keeps those with ``store`` in
    ``channels``)."""

    member: str
    targeted: list[TargetedOffer]
    seq: int = 0


class Refetch(_Push, tag="refetch", frozen=True):
    """Member events of ``member`` may have been missed (the node lost its fan-out connection
    for a while): ask for the wallet (or the cashier view) again."""

    member: str
    seq: int = 0
    reason: str = ""


WalletCommand = GetWallet | GetCodes | UpdateProfile | VerifyContact | ConfirmContact
WalletResult = WalletView | Codes | Profile | VerificationSent
WalletPush = CodeChanged | ProfileChanged | OffersChanged | Refetch


#: Example frames per message (Struct class name), merged into the AsyncAPI document.
EXAMPLES: dict[str, list[tuple[str, msgspec.Struct]]] = {
    "GetWallet": [("wallet", GetWallet(id="40", member="m-42"))],
    "GetCodes": [("used codes", GetCodes(id="41", member="m-42", status="used"))],
    "UpdateProfile": [
        (
            "birthday and consent",
            UpdateProfile(
                id="42",
                member="m-42",
                birthday=Birthday(month=3, day=14),
                consent=Consents(email=True, sms=False),
            ),
        ),
        ("time zone", UpdateProfile(id="45", member="m-42", time_zone="Europe/Paris")),
    ],
    "VerifyContact": [
        ("new email", VerifyContact(id="43", member="m-42", email="ada@example.org"))
    ],
    "ConfirmContact": [
        (
            "confirm",
            ConfirmContact(id="44", member="m-42", email="ada@example.org", code="493027"),
        )
    ],
    "CodeChanged": [
        (
            "issued",
            CodeChanged(
                member="m-42",
                code=RewardCode(
                    code="RW-7KQ2M9XTAB",
                    reward="ten-off",
                    member="m-42",
                    status="issued",
                    points=500,
                    expires_at=1_738_368_000_000,
                    name="$10 off",
                    reward_kind="amount_off",
                    value=1000,
                ),
                seq=8,
            ),
        )
    ],
    "ProfileChanged": [
        (
            "birthday set",
            ProfileChanged(
                member="m-42",
                profile=Profile(
                    member="m-42",
                    name="Ada",
                    email="ada@example.org",
                    birthday=Birthday(month=3, day=14),
                    consent=ConsentState(
                        email=Consent(granted=True, at=1_735_689_600_000, source="app")
                    ),
                ),
                seq=10,
            ),
        )
    ],
    "OffersChanged": [
        (
            "entered a segment",
            OffersChanged(
                member="m-42",
                targeted=[
                    TargetedOffer(
                        offer="tea-lovers",
                        name="Tea lovers: +200",
                        kind="bonus_category",
                        points=200,
                        category="tea",
                        channels=["store", "online"],
                        ends_at=1_735_776_000_000,
                    )
                ],
                seq=11,
            ),
        )
    ],
    "Refetch": [("reconnected", Refetch(member="m-42", seq=9, reason="fan-out reconnected"))],
}

__all__ = [
    "CODES_DEFAULT_PAGE",
    "CODES_MAX_PAGE",
    "EXAMPLES",
    "VERIFICATION_DIGITS",
    "WALLET_HISTORY_DEFAULT",
    "Birthday",
    "CodeChanged",
    "Codes",
    "ConfirmContact",
    "Consent",
    "ConsentState",
    "Consents",
    "Email",
    "GetCodes",
    "GetWallet",
    "OffersChanged",
    "Phone",
    "Profile",
    "ProfileChanged",
    "Refetch",
    "TimeZone",
    "UpdateProfile",
    "VerificationSent",
    "VerifyContact",
    "WalletCommand",
    "WalletPush",
    "WalletResult",
    "WalletView",
]
