"""What segments may ask of a member's profile (``MemberFacts``): its tier, marketing consent,
birth month and the attributes a segment can name. Members that can belong to a segment only:
not erased, not merged into another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.db import translate_errors


@dataclass(frozen=True, slots=True)
class MemberFacts:
    member: str
    tier: str
    consent_email: bool
    consent_sms: bool
    birth_month: int | None
    preferred_store: str
    enrolled_channel: str
    enrolled_store: str
    time_zone: str


_COLUMNS = """m.id, COALESCE(p.tier, '') AS tier, COALESCE(p.consent_email, false) AS ce,
       COALESCE(p.consent_sms, false) AS cs, p.birth_month,
       COALESCE(p.preferred_store, '') AS ps, COALESCE(p.enrolled_channel, '') AS ec,
       COALESCE(p.enrolled_store, '') AS es, COALESCE(p.time_zone, '') AS tz
  FROM members m LEFT JOIN member_profiles p ON p.member_id = m.id"""

_LIVE = """p.erased_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM member_merges g WHERE g.source_id = m.id)"""

_PAGE = f"""SELECT {_COLUMNS}
 WHERE m.merchant_id = $1 AND ($2::text IS NULL OR m.id > $2) AND {_LIVE}
 ORDER BY m.id LIMIT $3"""

_IDS = f"""SELECT m.id FROM members m LEFT JOIN member_profiles p ON p.member_id = m.id
 WHERE m.merchant_id = $1 AND ($2::text IS NULL OR m.id > $2) AND {_LIVE}
 ORDER BY m.id LIMIT $3"""

_OF = f"""SELECT {_COLUMNS}
 WHERE m.merchant_id = $1 AND m.id = ANY($2::text[]) AND {_LIVE}"""


def _facts(r: Any) -> MemberFacts:
    return MemberFacts(
        member=r["id"],
        tier=r["tier"],
        consent_email=r["ce"],
        consent_sms=r["cs"],
        birth_month=r["birth_month"],
        preferred_store=r["ps"],
        enrolled_channel=r["ec"],
        enrolled_store=r["es"],
        time_zone=r["tz"],
    )


async def member_facts_page(
    conn: Any, merchant: str, after: str | None, limit: int
) -> list[MemberFacts]:
    """The merchant's members after ``after`` in id order (erased and merged ones left out)."""
    with translate_errors("member facts read"):
        rows = await conn.fetch(_PAGE, merchant, after, limit)
    return [_facts(r) for r in rows]


async def member_ids_page(conn: Any, merchant: str, after: str | None, limit: int) -> list[str]:
    """``member_facts_page``'s members, their ids only."""
    with translate_errors("member facts read"):
        rows = await conn.fetch(_IDS, merchant, after, limit)
    return [r[0] for r in rows]


async def member_facts(conn: Any, merchant: str, members: Sequence[str]) -> list[MemberFacts]:
    """Of ``members``, those that are the merchant's (and neither erased nor merged)."""
    with translate_errors("member facts read"):
        rows = await conn.fetch(_OF, merchant, list(members))
    return [_facts(r) for r in rows]
