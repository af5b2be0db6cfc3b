"""The profile a member edits itself: its name, date of birth (month and day for the birthday
reward, the year if given), marketing consent per channel (with when and through which
channel it was last set), its preferred store, its time zone. Every change is pushed to the
member's watchers (``profile_changed``). The birthdays the birthday reward's job reads
(``birthdays_on``) come from here too."""

from __future__ import annotations

import calendar
import functools
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import asyncpg

from gateway.errors import Refused
from gateway.events import MemberEventSink
from gateway.members import directory
from gateway.store.db import translate_errors
from gateway.wire import epoch_ms
from protocol.codes import ErrorCode
from protocol.wallet import Birthday, Consent, Consents, ConsentState, Profile, ProfileChanged

_READ = """
SELECT m.id, COALESCE(p.name, '') AS name, COALESCE(p.tier, '') AS tier, p.erased_at,
       p.birth_month, p.birth_day, p.birth_year,
       p.consent_email, p.consent_email_at, p.consent_email_source,
       p.consent_sms, p.consent_sms_at, p.consent_sms_source, p.preferred_store, p.time_zone,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'phone') AS phone,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'email') AS email
  FROM members m LEFT JOIN member_profiles p ON p.member_id = m.id
 WHERE m.id = $1 AND m.merchant_id = $2
"""

# A field given (its flag true) takes its new value; a consent changed records when and how.
_UPDATE = """
INSERT INTO member_profiles (member_id, merchant_id) VALUES ($1, $2)
ON CONFLICT (member_id) DO NOTHING;
"""

_SET = """
UPDATE member_profiles SET
    name = CASE WHEN $3 THEN $4 ELSE name END,
    birth_month = CASE WHEN $5 THEN $6 ELSE birth_month END,
    birth_day = CASE WHEN $5 THEN $7 ELSE birth_day END,
    birth_year = CASE WHEN $5 THEN $8 ELSE birth_year END,
    consent_email_at = CASE WHEN $9::bool IS NOT NULL
                             AND consent_email IS DISTINCT FROM $9 THEN now()
                            ELSE consent_email_at END,
    consent_email_source = CASE WHEN $9::bool IS NOT NULL
                                 AND consent_email IS DISTINCT FROM $9 THEN $12
                                ELSE consent_email_source END,
    consent_email = COALESCE($9, consent_email),
    consent_sms_at = CASE WHEN $10::bool IS NOT NULL
                           AND consent_sms IS DISTINCT FROM $10 THEN now()
                          ELSE consent_sms_at END,
    consent_sms_source = CASE WHEN $10::bool IS NOT NULL
                               AND consent_sms IS DISTINCT FROM $10 THEN $12
                              ELSE consent_sms_source END,
    consent_sms = COALESCE($10, consent_sms),
    preferred_store = CASE WHEN $11 THEN $13 ELSE preferred_store END,
    time_zone = CASE WHEN $14 THEN $15 ELSE time_zone END
 WHERE member_id = $1 AND merchant_id = $2
"""

# The job of the birthday reward: the members of ``merchant`` born on one (month, day), in
# member order from after ``$4`` (index member_profiles_birthdays); neither erased nor
# merged into another member (a merged duplicate's account is the survivor's).
_BIRTHDAYS = """
SELECT p.member_id, p.time_zone, p.birthday_set_at
  FROM member_profiles p
 WHERE p.merchant_id = $1 AND p.birth_month = $2 AND p.birth_day = $3 AND p.member_id > $4
   AND p.erased_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM member_merges g WHERE g.source_id = p.member_id)
 ORDER BY p.member_id
 LIMIT $5
"""


def check_birthday(b: Birthday) -> None:
    """A day the month has: 31 April, 30 February and 29 February of a year that is not a
    leap year are refused (29 February without a year is a birthday)."""
    if b.month == 2 and b.day == 29:
        ok = b.year is None or calendar.isleap(b.year)
    else:
        ok = b.day <= calendar.monthrange(2001 if b.year is None else b.year, b.month)[1]
    if not ok:
        raise Refused(
            f"{b.month:02d}-{b.day:02d} is not a day of that month", ErrorCode.INVALID_FIELD
        )
    if b.year is not None and b.year > datetime.now().year:
        raise Refused("a date of birth in the future", ErrorCode.INVALID_FIELD)


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (from the node's time zone database), or refused with
    ``time_zone_unknown``. ``UTC`` is always known."""
    if name == "UTC":
        return UTC
    if name not in _zone_names():
        raise Refused(f"no time zone {name!r}", ErrorCode.TIME_ZONE_UNKNOWN)
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Born:
    """A member born on the day the birthday job asked for: its own time zone (None if not
    given) and when its birthday was last set or changed (None: never stamped)."""

    member: str
    time_zone: str | None
    set_at: datetime | None


async def birthdays_on(
    pool: asyncpg.Pool[Any], merchant: str, month: int, day: int, after: str = "", limit: int = 1000
) -> list[Born]:
    """One page of the members of ``merchant`` born on ``month``/``day`` (any year), in
    member order after ``after``; neither erased nor merged away."""
    with translate_errors("birthdays read"):
        rows = await pool.fetch(_BIRTHDAYS, merchant, month, day, after, limit)
    return [Born(r["member_id"], r["time_zone"], r["birthday_set_at"]) for r in rows]


def _consent(granted: bool | None, at: datetime | None, source: str | None) -> Consent:
    return Consent(granted=bool(granted), at=0 if at is None else epoch_ms(at), source=source or "")


def profile_of(r: Any) -> Profile:
    birthday = None
    if r["birth_month"] is not None and r["birth_day"] is not None:
        birthday = Birthday(month=r["birth_month"], day=r["birth_day"], year=r["birth_year"])
    return Profile(
        member=r["id"],
        name=r["name"],
        email=r["email"],
        phone=r["phone"],
        birthday=birthday,
        consent=ConsentState(
            email=_consent(r["consent_email"], r["consent_email_at"], r["consent_email_source"]),
            sms=_consent(r["consent_sms"], r["consent_sms_at"], r["consent_sms_source"]),
        ),
        preferred_store=r["preferred_store"],
        tier=r["tier"],
        time_zone=r["time_zone"],
    )


@dataclass(frozen=True, slots=True)
class Reach:
    """How a member may be written to: its name, addresses, consent per channel (``None``:
    never given, as good as no) and time zone."""

    member: str
    name: str
    email: str | None
    phone: str | None
    consent_email: bool
    consent_sms: bool
    time_zone: str | None


# Neither erased nor merged into another member: those are written to no more.
_REACH = """
SELECT m.id, COALESCE(p.name, '') AS name, p.consent_email, p.consent_sms, p.time_zone,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'phone') AS phone,
       (SELECT value FROM member_identities i WHERE i.member_id = m.id AND i.kind = 'email') AS email
  FROM members m LEFT JOIN member_profiles p ON p.member_id = m.id
 WHERE m.id = ANY($2::text[]) AND m.merchant_id = $1 AND p.erased_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM member_merges g WHERE g.source_id = m.id)
"""


async def reach(conn: Any, merchant: str, members: list[str]) -> dict[str, Reach]:
    """The members of ``members`` that may be written to, read now (a consent withdrawn a
    moment ago is seen)."""
    if not members:
        return {}
    with translate_errors("profile read"):
        rows = await conn.fetch(_REACH, merchant, members)
    return {
        r["id"]: Reach(
            member=r["id"],
            name=r["name"],
            email=r["email"],
            phone=r["phone"],
            consent_email=bool(r["consent_email"]),
            consent_sms=bool(r["consent_sms"]),
            time_zone=r["time_zone"],
        )
        for r in rows
    }


class Profiles:
    def __init__(self, pool: asyncpg.Pool[Any], events: MemberEventSink) -> None:
        self._pool = pool
        self._events = events

    async def view(self, merchant: str, member: str, erased: bool = False) -> Profile:
        """The profile of ``member`` (or of the survivor it was merged into); refused as an
        unknown member for another merchant's, or (unless ``erased``: the export's record) an
        erased one."""
        who = await directory.resolve(self._pool, member)
        with translate_errors("profile read"):
            r = await self._pool.fetchrow(_READ, who, merchant)
        if r is None or (r["erased_at"] is not None and not erased):
            raise Refused("no such member", ErrorCode.MEMBER_NOT_FOUND)
        return profile_of(r)

    async def update(
        self,
        merchant: str,
        member: str,
        *,
        source: str,
        name: str | None = None,
        birthday: Birthday | None = None,
        consent: Consents | None = None,
        preferred_store: str | None = None,
        clear_preferred_store: bool = False,
        time_zone: str | None = None,
        clear_time_zone: bool = False,
    ) -> Profile:
        """Set what is given; ``source`` is the channel it came through (``app``, ``web``,
        ``pos``), recorded with a changed consent. Everything is checked before anything is
        written: a refusal changes nothing."""
        if birthday is not None:
            check_birthday(birthday)
        if clear_preferred_store and preferred_store is not None:
            raise Refused(
                "give preferred_store or clear_preferred_store, not both", ErrorCode.INVALID_FIELD
            )
        if clear_time_zone and time_zone is not None:
            raise Refused("give time_zone or clear_time_zone, not both", ErrorCode.INVALID_FIELD)
        if time_zone is not None:
            check_time_zone(time_zone)
        current = await self.view(merchant, member)  # refuses others' and erased members
        who = current.member
        email = consent.email if consent is not None else None
        sms = consent.sms if consent is not None else None
        with translate_errors("profile write"):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_UPDATE, who, merchant)
                await conn.execute(
                    _SET,
                    who,
                    merchant,
                    name is not None,
                    name or "",
                    birthday is not None,
                    None if birthday is None else birthday.month,
                    None if birthday is None else birthday.day,
                    None if birthday is None else birthday.year,
                    email,
                    sms,
                    clear_preferred_store or preferred_store is not None,
                    source,
                    preferred_store,
                    clear_time_zone or time_zone is not None,
                    time_zone,
                )
        return await self.changed(merchant, who)

    async def changed(self, merchant: str, member: str) -> Profile:
        """Read the profile as it is now and push it to the member's watchers."""
        profile = await self.view(merchant, member)
        await self._events.publish(merchant, member, ProfileChanged(member=member, profile=profile))
        return profile
