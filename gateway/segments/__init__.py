"""Segments: a merchant's segment definitions (typed conditions on purchase aggregates, RFM
scores, tier, points, birthday month, consent and profile attributes, combined with
all/any/not), live membership (re-evaluated for a member after its sale, return, redemption,
tier change, profile edit or merge) and full recomputes (on a definition change, on demand,
nightly) through the same evaluation. Membership changes are events (``MembershipChange``,
the merchant's Redis stream). Owns the tables segments, segment_members and segment_rfm. This
is its public face."""

from gateway.segments.conditions import (
    MAX_DEPTH,
    MAX_LEAVES,
    MAX_WINDOW,
    Condition,
    Cuts,
    Facts,
    matches,
    parse,
    score,
)
from gateway.segments.events import (
    SEGMENT_EVENTS_MAX,
    MembershipChange,
    MembershipSink,
    SegmentStream,
)
from gateway.segments.rows import SegmentRows
from gateway.segments.service import BATCH, DEFINITIONS_TTL, Recomputed, Segments, evaluate
from gateway.segments.store import Segment, memberships
from gateway.segments.triggers import SegmentTriggers

__all__ = [
    "BATCH",
    "DEFINITIONS_TTL",
    "MAX_DEPTH",
    "MAX_LEAVES",
    "MAX_WINDOW",
    "SEGMENT_EVENTS_MAX",
    "Condition",
    "Cuts",
    "Facts",
    "MembershipChange",
    "MembershipSink",
    "Recomputed",
    "Segment",
    "SegmentRows",
    "SegmentStream",
    "SegmentTriggers",
    "Segments",
    "evaluate",
    "matches",
    "memberships",
    "parse",
    "score",
]
