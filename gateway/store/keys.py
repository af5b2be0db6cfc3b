"""Every Redis key, channel and Lua script, in one place. Nobody else spells a key.

Keys carry the member id in a hash tag (``{m:<id>}``) so a member's keys live in one Redis
Cluster slot and sharded pub/sub (SPUBLISH) can later route by member.
"""

from __future__ import annotations

PREFIX = "lg"


class Keys:
    """Key builder bound to a prefix (each test run and each deployment gets its own)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix

    def balance(self, member: str) -> str:
        """Hash p (posted), h (held), v (version): a rebuildable cache of PostgreSQL."""
        return f"{self.prefix}:bal:{{m:{member}}}"

    def member_channel(self, member: str) -> str:
        """Pub/sub channel carrying encoded ``balance_changed`` frames for one member."""
        return f"{self.prefix}:ch:{{m:{member}}}"

    def member_channel_pattern(self) -> str:
        return f"{self.prefix}:ch:*"

    def broadcast_channel(self, merchant: str) -> str:
        """Pub/sub channel for merchant-wide messages (e.g. a new offer to every session)."""
        return f"{self.prefix}:bc:{merchant}"

    def presence(self, member: str) -> str:
        """Hash session-id -> "channel|node|expiry-ms" of the member's live sessions."""
        return f"{self.prefix}:pr:{{m:{member}}}"

    def member_from_channel(self, channel: str) -> str:
        # "<prefix>:ch:{m:<member>}"
        return channel[len(self.prefix) + 7 : -1]


# Set the cached balance only if the event is newer than what is cached, then publish the
# frame (always: a cache filled by a read-through may already hold this version, but the
# subscribers still need the event). KEYS[1]=balance key, KEYS[2]=channel.
# ARGV: version, posted, held, payload.
APPLY_EVENT = """
local v = tonumber(ARGV[1])
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if v > cur then
  redis.call('HSET', KEYS[1], 'p', ARGV[2], 'h', ARGV[3], 'v', ARGV[1])
end
return redis.call('PUBLISH', KEYS[2], ARGV[4])
"""

# Read-through fill and rebuild: same version guard, no publish. KEYS[1]=balance key.
# ARGV: version, posted, held.
FILL_BALANCE = """
local v = tonumber(ARGV[1])
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if v > cur then
  redis.call('HSET', KEYS[1], 'p', ARGV[2], 'h', ARGV[3], 'v', ARGV[1])
  return 1
end
return 0
"""
