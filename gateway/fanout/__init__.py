"""Cross-node delivery: per-member feeds in version order with gap filling, presence, the
merchant-wide broadcast, member events, and the publisher that is the ledger's event sink.
This is its public face; nothing outside the package imports its submodules."""

from gateway.fanout.broadcast import MAX_NOTICE_BYTES, LocalBroadcast, publish_notice
from gateway.fanout.feed import Joined, Subscriber
from gateway.fanout.feeds import Feeds
from gateway.fanout.member_events import MemberEvents
from gateway.fanout.presence import PresenceBook
from gateway.fanout.publisher import Publisher

__all__ = [
    "MAX_NOTICE_BYTES",
    "Feeds",
    "Joined",
    "LocalBroadcast",
    "MemberEvents",
    "PresenceBook",
    "Publisher",
    "Subscriber",
    "publish_notice",
]
