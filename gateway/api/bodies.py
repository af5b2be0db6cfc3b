"""Request bodies of the admin API (``gateway/api/admin.py``), validated by msgspec as they are
decoded; ``gateway/api/openapi.py`` derives their JSON Schemas from these Structs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

from gateway.programme import exponent
from protocol.limits import Id, Text

Region = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$(?!\n)")]
#: An ISO 4217 code with a minor unit (checked in ``ProgrammeIn.__post_init__``).
Currency = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Z]{3}$(?!\n)",
        description="ISO 4217 currency code (USD, EUR, JPY, KWD, ...); sale amounts are in its "
        "minor units (ISO 4217 exponent: 2 for USD, 0 for JPY, 3 for KWD). A code that is not "
        "a current ISO 4217 currency with a minor unit (XAU, XXX) is refused.",
    ),
]
#: points per whole currency unit: numeric(12, 4) holds 8 integer digits
Rate = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{1,8}(\.[0-9]{1,4})?$(?!\n)",
        description="Points per whole unit of the currency (1 USD, 1 JPY, 1 KWD), before rules.",
    ),
]
#: a rule's or tier's multiplier: numeric(10, 4) holds 6 integer digits
Multiplier = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,6}(\.[0-9]{1,4})?$(?!\n)")]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Days = Annotated[int, msgspec.Meta(ge=1, le=36_500)]
#: An instant with its offset (a naive time cannot be compared with the clock).
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
#: Earliest instant accepted: windows and validity periods are counted back from it.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: Latest instant accepted: an offset can push a datetime of year 9999 (Python's last) past
#: year 9999 once in UTC, which neither Python nor the driver can hold.
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _in_accepted_years(at: datetime | None) -> None:
    if at is not None and not EARLIEST <= at < LATEST:
        raise ValueError("the instant must be in 2000 or later, and before 9000")


class ProgrammeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Text | None = None
    currency: Currency | None = None
    points_per_unit: Rate | None = None
    region: Region | None = None
    rounding: Literal["line", "sale"] | None = None
    max_points_per_sale: Count | None = None
    tier_window_days: Days | None = None
    expiry_days: Days | None = None
    code_valid_days: Days | None = None

    def __post_init__(self) -> None:
        if self.currency is not None and exponent(self.currency) is None:
            raise ValueError(
                f"currency {self.currency!r} is not an ISO 4217 currency with a minor unit"
            )


class RuleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["product", "category", "promotion"]
    name: Text = ""
    sku: Id | None = None
    category: Id | None = None
    multiplier: Multiplier = "1"
    bonus: Count = 0
    min_total: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=10_000_000,
            description="A promotion's least sale total, in minor units of the currency.",
        ),
    ] = 0
    tier: Id | None = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None

    def __post_init__(self) -> None:
        _in_accepted_years(self.starts_at)
        _in_accepted_years(self.ends_at)
        start, end = self.starts_at, self.ends_at
        if start is not None and end is not None and end <= start:
            raise ValueError("ends_at must be after starts_at")


class TierIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Id
    name: Text = ""
    threshold: Count
    multiplier: Multiplier = "1"


class RewardIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Text = ""
    cost: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
    kind: Literal["amount_off", "percent_off", "free_item"]
    value: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=10_000_000,
            description="amount_off: minor units of the currency; percent_off: 1 to 100.",
        ),
    ] = 0
    sku: Id | None = None
    min_tier: Id | None = None
    valid_days: Days | None = None
    active: bool = True

    def __post_init__(self) -> None:
        if self.kind == "percent_off" and not 1 <= self.value <= 100:
            raise ValueError("a percent_off reward's value is a percentage, 1 to 100")


class EnrolIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    phone: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    card: Id | None = None
    name: Text = ""


class VoidIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    op: Id


class MergeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: the duplicate member merged into the one in the path (which survives)
    source: Id
    #: the merge's operation id: a retry with the same op (and content) returns the same
    #: result and completes a merge a crash interrupted
    op: Id


class EvaluateIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    at: Instant | None = None

    def __post_init__(self) -> None:
        _in_accepted_years(self.at)


class ExpiryIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    now: Instant | None = None

    def __post_init__(self) -> None:
        _in_accepted_years(self.now)


class TiersIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tiers: Annotated[list[TierIn], msgspec.Meta(max_length=20)]
