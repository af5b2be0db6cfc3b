"""Members: one identity across channels (phone, email, card, the app's signed pass),
enrolment, lookup, profiles, the merge of duplicates and GDPR export and erasure. Owns the
tables members, member_identities, member_profiles and member_merges. This is its public
face."""

from gateway.members.contacts import ContactProofs, ContactSender, mask
from gateway.members.directory import (
    Owners,
    Profile,
    create_members,
    enrol,
    find_member,
    identifies,
    new_member_id,
    profile,
    resolve,
    set_tier,
    tiers_of,
)
from gateway.members.enrolment import Members, identities
from gateway.members.facts import MemberFacts, member_facts, member_facts_page, member_ids_page
from gateway.members.gdpr import Privacy
from gateway.members.identity import (
    PASS_TTL_SECONDS,
    mint_pass,
    normalise_card,
    normalise_email,
    normalise_phone,
    verify_pass,
)
from gateway.members.merge import Merger, MergeResult
from gateway.members.migrations import STEPS as DATA_MIGRATIONS
from gateway.members.profiles import (
    Born,
    Profiles,
    Reach,
    birthdays_on,
    check_birthday,
    check_time_zone,
    reach,
)
from gateway.members.rows import MemberRows, TierKeeper

__all__ = [
    "DATA_MIGRATIONS",
    "PASS_TTL_SECONDS",
    "Born",
    "ContactProofs",
    "ContactSender",
    "MemberFacts",
    "MemberRows",
    "Members",
    "MergeResult",
    "Merger",
    "Owners",
    "Privacy",
    "Profile",
    "Profiles",
    "Reach",
    "TierKeeper",
    "birthdays_on",
    "check_birthday",
    "check_time_zone",
    "create_members",
    "enrol",
    "find_member",
    "identifies",
    "identities",
    "mask",
    "member_facts",
    "member_facts_page",
    "member_ids_page",
    "mint_pass",
    "new_member_id",
    "normalise_card",
    "normalise_email",
    "normalise_phone",
    "profile",
    "reach",
    "resolve",
    "set_tier",
    "tiers_of",
    "verify_pass",
]
