"""A segment's conditions: typed (a msgspec tagged union, one struct per kind of condition),
combined with ``all`` / ``any`` / ``not`` to a bounded depth, and evaluated by one pure
function of a member's facts and the instant (``matches``): the live update of one member and
the full recompute of every member call the same function on facts read by the same
statements, which is what makes their results identical.

Windows ("within N days") count whole UTC days: within 1 day is today, within 7 days today and
the 6 days before. A figure over no window is over the member's whole history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from gateway.aggregates import BRAND, CATEGORY, SKU, TOTAL, Feature
from gateway.errors import Refused
from gateway.members import MemberFacts
from protocol.codes import ErrorCode
from protocol.limits import ID_MAX_LEN, ID_PATTERN

#: Deepest nesting of all/any/not, and most conditions (leaves) in one segment.
MAX_DEPTH = 6
MAX_LEAVES = 32
#: Longest window, in days (ten years).
MAX_WINDOW = 3_650
#: RFM's frequency and monetary figures are over the last year.
RFM_WINDOW = 365

Key = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=ID_MAX_LEN)]
Days = Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW)]
Amount = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Score = Annotated[int, msgspec.Meta(ge=1, le=5)]


class _Cond(
    msgspec.Struct,
    kw_only=True,
    frozen=True,
    tag_field="type",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    pass


class Spend(_Cond, tag="spend", frozen=True):
    """What the member paid (net of returns), at least ``min`` and at most ``max`` (minor
    units), within ``within_days`` (None: ever)."""

    min: Amount | None = None
    max: Amount | None = None
    within_days: Days | None = None


class Visits(_Cond, tag="visits", frozen=True):
    """Sales (a return does not undo a visit), at least ``min`` / at most ``max``."""

    min: Amount | None = None
    max: Amount | None = None
    within_days: Days | None = None


class Recency(_Cond, tag="recency", frozen=True):
    """Days since the latest purchase (0: today), at least ``min_days`` (lapsed) and at most
    ``max_days`` (recent). A member that never bought matches only ``never: true``."""

    min_days: Annotated[int, msgspec.Meta(ge=0, le=MAX_WINDOW)] | None = None
    max_days: Annotated[int, msgspec.Meta(ge=0, le=MAX_WINDOW)] | None = None
    never: bool = False


class Rfm(_Cond, tag="rfm", frozen=True):
    """A recency, frequency or monetary score from 1 to 5 (5: most recent, most visits, most
    spend in the last year), by quintiles of the merchant's buying members, between ``min``
    and ``max``. The quintiles are recomputed by each full pass and held between passes."""

    score: Literal["recency", "frequency", "monetary"]
    min: Score = 1
    max: Score = 5


class Bought(_Cond, tag="bought", frozen=True):
    """Bought a ``sku``, a ``category`` or a ``brand`` (``of``): ``units`` (net of returns),
    ``visits`` (sales that included it) or ``spend`` (lines' value, net of returns) at least
    ``min``, within ``within_days``."""

    of: Literal["sku", "category", "brand"]
    key: Key
    measure: Literal["units", "visits", "spend"] = "units"
    min: Annotated[int, msgspec.Meta(ge=1, le=10**15)] = 1
    within_days: Days | None = None


class Channels(_Cond, tag="channels", frozen=True):
    """The channel mix: ``online`` true (false): bought (never bought) online, through a web
    shop; ``in_store`` likewise at a register; None: either. Within ``within_days``."""

    online: bool | None = None
    in_store: bool | None = None
    within_days: Days | None = None


class TierIs(_Cond, tag="tier", frozen=True):
    """The member's tier is one of ``in`` ('' for no tier)."""

    in_: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=ID_MAX_LEN)]],
        msgspec.Meta(min_length=1, max_length=32),
    ] = msgspec.field(name="in")


class Points(_Cond, tag="points", frozen=True):
    """Points available now, at least ``min`` / at most ``max``."""

    min: Amount | None = None
    max: Amount | None = None


class BirthdayMonth(_Cond, tag="birthday_month", frozen=True):
    """The member's birthday is in this month (UTC)."""


class ConsentTo(_Cond, tag="consent", frozen=True):
    """The member consented to marketing by ``channel``."""

    channel: Literal["email", "sms"]


class Attribute(_Cond, tag="attribute", frozen=True):
    """A profile attribute is one of ``in``."""

    name: Literal["preferred_store", "enrolled_store", "enrolled_channel", "time_zone"]
    in_: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=64)
    ] = msgspec.field(name="in")


class All(_Cond, tag="all", frozen=True):
    conditions: Annotated[list[Condition], msgspec.Meta(min_length=1, max_length=MAX_LEAVES)]


class Any_(_Cond, tag="any", frozen=True):
    conditions: Annotated[list[Condition], msgspec.Meta(min_length=1, max_length=MAX_LEAVES)]


class Not(_Cond, tag="not", frozen=True):
    condition: Condition


Leaf = (
    Spend
    | Visits
    | Recency
    | Rfm
    | Bought
    | Channels
    | TierIs
    | Points
    | BirthdayMonth
    | ConsentTo
    | Attribute
)
Condition = Leaf | All | Any_ | Not

_decoder: msgspec.json.Decoder[Condition] = msgspec.json.Decoder(Condition)


def parse(raw: bytes) -> Condition:
    """A condition tree from JSON, checked whole (an unknown ``type``, a field of another kind,
    a bad bound, too deep or too many conditions): ``invalid_field`` else."""
    try:
        cond: Condition = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise Refused(f"condition: {exc}", ErrorCode.INVALID_FIELD) from None
    check(cond)
    return cond


def check(cond: Condition) -> None:
    leaves = 0

    def walk(c: Condition, depth: int, at: str) -> None:
        nonlocal leaves
        if depth > MAX_DEPTH:
            raise Refused(f"{at}: nested deeper than {MAX_DEPTH}", ErrorCode.INVALID_FIELD)
        if isinstance(c, All | Any_):
            for i, sub in enumerate(c.conditions):
                walk(sub, depth + 1, f"{at}.conditions[{i}]")
            return
        if isinstance(c, Not):
            walk(c.condition, depth + 1, f"{at}.condition")
            return
        leaves += 1
        if leaves > MAX_LEAVES:
            raise Refused(f"more than {MAX_LEAVES} conditions", ErrorCode.INVALID_FIELD)
        lo_hi: tuple[int | None, int | None] | None = None
        if isinstance(c, Spend | Visits | Points):
            lo_hi = (c.min, c.max)
            if c.min is None and c.max is None:
                raise Refused(f"{at}: give min or max", ErrorCode.INVALID_FIELD)
        elif isinstance(c, Recency):
            lo_hi = (c.min_days, c.max_days)
            if c.never and lo_hi != (None, None):
                raise Refused(f"{at}: never takes no days", ErrorCode.INVALID_FIELD)
            if not c.never and lo_hi == (None, None):
                raise Refused(f"{at}: give min_days, max_days or never", ErrorCode.INVALID_FIELD)
        elif isinstance(c, Rfm):
            lo_hi = (c.min, c.max)
        elif isinstance(c, Channels) and c.online is None and c.in_store is None:
            raise Refused(f"{at}: give online or in_store", ErrorCode.INVALID_FIELD)
        if lo_hi and lo_hi[0] is not None and lo_hi[1] is not None and lo_hi[0] > lo_hi[1]:
            raise Refused(f"{at}: the minimum is above the maximum", ErrorCode.INVALID_FIELD)

    walk(cond, 1, "condition")


# ------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True, slots=True)
class Cuts:
    """The RFM quintile boundaries (each four ascending values: the 20th, 40th, 60th and 80th
    percentiles) of days since the latest purchase, visits and spend in the last year."""

    recency: tuple[int, ...] = ()
    frequency: tuple[int, ...] = ()
    monetary: tuple[int, ...] = ()


def score(value: int | None, cuts: tuple[int, ...], lower_is_better: bool = False) -> int:
    """1 to 5: how many quintile boundaries ``value`` is beyond, plus 1 (None: 1)."""
    if value is None or not cuts:
        return 1
    if lower_is_better:
        return 5 - sum(1 for c in cuts if value > c)
    return 1 + sum(1 for c in cuts if value > c)


_OF = {"sku": SKU, "category": CATEGORY, "brand": BRAND}


def _since(today: int, within: int | None) -> int | None:
    return None if within is None else today - within + 1


def leaf_features(c: Leaf, today: int) -> list[Feature]:
    """The aggregates' figures a leaf reads, for a pass at ``today``."""
    if isinstance(c, Spend):
        return [Feature(TOTAL, "", "spend", _since(today, c.within_days))]
    if isinstance(c, Visits):
        return [Feature(TOTAL, "", "visits", _since(today, c.within_days))]
    if isinstance(c, Recency):
        return [Feature(TOTAL, "", "last")]
    if isinstance(c, Rfm):
        return rfm_features(today)
    if isinstance(c, Bought):
        return [Feature(_OF[c.of], c.key, c.measure, _since(today, c.within_days))]
    if isinstance(c, Channels):
        s = _since(today, c.within_days)
        return [Feature("h", "web", "visits", s), Feature("h", "pos", "visits", s)]
    return []


def rfm_features(today: int) -> list[Feature]:
    since = _since(today, RFM_WINDOW)
    return [
        Feature(TOTAL, "", "last"),
        Feature(TOTAL, "", "visits", since),
        Feature(TOTAL, "", "spend", since),
    ]


def features_of(cond: Condition, today: int) -> list[Feature]:
    """Every figure the tree reads (each once)."""
    out: dict[Feature, None] = {}

    def walk(c: Condition) -> None:
        if isinstance(c, All | Any_):
            for sub in c.conditions:
                walk(sub)
        elif isinstance(c, Not):
            walk(c.condition)
        else:
            out.update(dict.fromkeys(leaf_features(c, today)))

    walk(cond)
    return list(out)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything a condition may read of one member at one instant."""

    member: MemberFacts
    available: int
    figures: dict[Feature, int | None]
    today: int
    month: int
    cuts: Cuts


Test = Callable[[Facts], bool]


def _between(lo: int | None, hi: int | None) -> Callable[[int], bool]:
    if lo is None:
        return (lambda v: True) if hi is None else (lambda v: v <= hi)
    return (lambda v: v >= lo) if hi is None else (lambda v: lo <= v <= hi)


def _count(feature: Feature) -> Callable[[Facts], int]:
    def read(f: Facts) -> int:
        v = f.figures.get(feature)
        return 0 if v is None else v

    return read


def compiled(c: Condition, today: int) -> Test:
    """``c`` as a function of a member's facts at ``today`` (its windows' first days, its
    figures' keys and its bounds worked out once): what ``matches`` runs, and what a pass runs
    for each member."""
    if isinstance(c, All):
        subs = [compiled(s, today) for s in c.conditions]
        return lambda f: all(t(f) for t in subs)
    if isinstance(c, Any_):
        subs = [compiled(s, today) for s in c.conditions]
        return lambda f: any(t(f) for t in subs)
    if isinstance(c, Not):
        sub = compiled(c.condition, today)
        return lambda f: not sub(f)
    if isinstance(c, Spend | Visits):
        read, ok = _count(leaf_features(c, today)[0]), _between(c.min, c.max)
        return lambda f: ok(read(f))
    if isinstance(c, Recency):
        last_key, never = Feature(TOTAL, "", "last"), c.never
        days_ok = _between(c.min_days, c.max_days)

        def recency(f: Facts) -> bool:
            last = f.figures.get(last_key)
            if last is None:
                return never
            return not never and days_ok(f.today - last)

        return recency
    if isinstance(c, Rfm):
        keys = rfm_features(today)
        lo, hi, which = c.min, c.max, c.score

        def rfm(f: Facts) -> bool:
            last, visits, spend = (f.figures.get(k) for k in keys)
            if which == "recency":
                s = score(None if last is None else f.today - last, f.cuts.recency, True)
            elif which == "frequency":
                s = score(visits or 0, f.cuts.frequency)
            else:
                s = score(spend or 0, f.cuts.monetary)
            return lo <= s <= hi

        return rfm
    if isinstance(c, Bought):
        read, least = _count(leaf_features(c, today)[0]), c.min
        return lambda f: read(f) >= least
    if isinstance(c, Channels):
        web_key, pos_key = leaf_features(c, today)
        web, pos = _count(web_key), _count(pos_key)
        online, in_store = c.online, c.in_store
        return lambda f: (
            (online is None or (web(f) > 0) == online)
            and (in_store is None or (pos(f) > 0) == in_store)
        )
    if isinstance(c, TierIs):
        tiers = frozenset(c.in_)
        return lambda f: f.member.tier in tiers
    if isinstance(c, Points):
        ok = _between(c.min, c.max)
        return lambda f: ok(f.available)
    if isinstance(c, BirthdayMonth):
        return lambda f: f.member.birth_month == f.month
    if isinstance(c, ConsentTo):
        if c.channel == "email":
            return lambda f: f.member.consent_email
        return lambda f: f.member.consent_sms
    if isinstance(c, Attribute):
        name, values = c.name, frozenset(c.in_)
        return lambda f: getattr(f.member, name) in values
    raise AssertionError(c)


def matches(c: Condition, f: Facts) -> bool:
    """Whether the member with facts ``f`` meets ``c``: a pure function."""
    return compiled(c, f.today)(f)


def uses_rfm(cond: Condition) -> bool:
    if isinstance(cond, All | Any_):
        return any(uses_rfm(s) for s in cond.conditions)
    if isinstance(cond, Not):
        return uses_rfm(cond.condition)
    return isinstance(cond, Rfm)


def encode(cond: Condition) -> bytes:
    return msgspec.json.encode(cond)
