"""Every Redis key, channel and Lua script, in one place. Nobody else spells a key.

Keys carry the member id in a hash tag (``{m:<id>}``) so a member's keys live in one Redis
Cluster slot and sharded pub/sub (SPUBLISH) routes by member. On a cluster (``Keys(...,
cluster=True)``) every script's keys are in one slot (``single_slot`` asserts it), the cache
epoch is one key per hash slot (``epoch(slot)``) and the scripts publish a member's frames with
SPUBLISH (``lua``).
"""

from __future__ import annotations

from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "lg"
SLOTS = REDIS_CLUSTER_HASH_SLOTS


@cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short hash tag that maps to it (the smallest decimal number
    whose CRC16 lands there): the per-slot epoch key is named with it. Computed once, about
    0.2 s (some 170,000 CRC16s in C)."""
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    i = 0
    while missing:
        tag = str(i)
        s = key_slot(tag.encode())
        if tags[s] is None:
            tags[s] = tag
            missing -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


class Keys:
    """Key builder bound to a prefix (each test run and each deployment gets its own)."""

    __slots__ = ("cluster", "prefix")

    def __init__(self, prefix: str = PREFIX, cluster: bool = False) -> None:
        self.prefix = prefix
        #: Redis Cluster: per-slot epochs, SPUBLISH for member channels.
        self.cluster = cluster

    def slot(self, member: str) -> int:
        """The hash slot of every key and channel of ``member`` (-1 on a single Redis, where
        there is one epoch)."""
        if not self.cluster:
            return -1
        return key_slot(f"m:{member}".encode())

    def lua(self, script: str) -> str:
        """``script`` as this deployment runs it: on a cluster a member's channel is a shard
        channel (SPUBLISH: the message stays inside the shard that owns the slot)."""
        if not self.cluster:
            return script
        return script.replace("redis.call('PUBLISH', KEYS", "redis.call('SPUBLISH', KEYS")

    def single_slot(self, names: list[str]) -> list[str]:
        """``names`` unchanged, after checking (on a cluster) that they share one slot: a
        script whose keys span slots would be refused by the cluster (CROSSSLOT)."""
        if self.cluster and names:
            first = key_slot(names[0].encode())
            assert all(key_slot(n.encode()) == first for n in names), names
        return names

    def balance(self, member: str) -> str:
        """Hash p (posted), h (held), v (version), f (floor): a rebuildable cache of
        PostgreSQL (see ``APPLY_EVENTS``)."""
        return f"{self.prefix}:bal:{{m:{member}}}"

    def epoch(self, slot: int = -1) -> str:
        """The cache's epoch (see ``CACHE_EPOCH``): gone exactly when Redis lost its data. On a
        cluster, one per hash slot (``slot`` from ``Keys.slot``), named with a tag of that slot,
        so a shard that lost its data is told apart from the others."""
        if slot < 0:
            return f"{self.prefix}:epoch"
        return f"{self.prefix}:epoch:{{{slot_tags()[slot]}}}"

    def member_channel(self, member: str) -> str:
        """Pub/sub channel carrying encoded ``balance_changed`` frames for one member."""
        return f"{self.prefix}:ch:{{m:{member}}}"

    def broadcast_channel(self, merchant: str) -> str:
        """Pub/sub channel for merchant-wide messages (e.g. a new offer to every session)."""
        return f"{self.prefix}:bc:{merchant}"

    def notice_log(self) -> str:
        """Stream of the latest notices (every merchant's), capped: what a node replays after
        its fan-out connection was down (see ``gateway.fanout.broadcast``)."""
        return f"{self.prefix}:bclog"

    def member_events_channel(self, merchant: str) -> str:
        """Pub/sub channel for member events other than balance changes (``tier_changed``),
        each wrapped in an envelope naming the member (see ``gateway.loyalty.live``)."""
        return f"{self.prefix}:me:{merchant}"

    def member_events_pattern(self) -> str:
        return f"{self.prefix}:me:*"

    def segment_events(self, merchant: str) -> str:
        """Stream of the merchant's segment membership changes (``gateway.segments``): one
        entry per member that entered or left segments, for consumers (offers, webhooks) to
        read with consumer groups; capped near ``SEGMENT_EVENTS_MAX`` entries."""
        return f"{self.prefix}:sg:{merchant}"

    def member_events_seq(self, member: str) -> str:
        """Counter of the member's events (``tier_changed``, ``code_changed``, ...): each
        carries the next value as its ``seq`` (see ``PUBLISH_MEMBER_EVENT``)."""
        return f"{self.prefix}:ev:{{m:{member}}}"

    def presence(self, member: str) -> str:
        """Hash session-id -> "channel|node|expiry-ms" of the member's live sessions."""
        return f"{self.prefix}:pr:{{m:{member}}}"

    def merchant_from_broadcast(self, channel: str) -> str:
        # "<prefix>:bc:<merchant>"
        return channel[len(self.prefix) + 4 :]

    def member_from_channel(self, channel: str) -> str:
        # "<prefix>:ch:{m:<member>}"
        return channel[len(self.prefix) + 7 : -1]


# The cache's epoch: a value Redis keeps under ``Keys.epoch()`` and creates (from its own clock)
# when it is missing, i.e. when Redis is new or lost its data. A node writes a balance into
# the cache only with the epoch it knew *before* it read or committed that balance; a write
# carrying another epoch was composed before Redis lost its data and could put back a version
# older than one that was lost with it (the version guard forgets everything on a restart),
# so it only raises the floor. Every script that writes balances returns the epoch, and that
# is how a node learns it. KEYS[1] is the epoch key.
_EPOCH = """
local function epoch()
  local e = redis.call('GET', KEYS[1])
  if not e then
    local t = redis.call('TIME')
    e = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', KEYS[1], e)
  end
  return e
end
"""

# The current epoch (created if missing). KEYS[1]=epoch.
CACHE_EPOCH = _EPOCH + "return epoch()\n"

# A cached balance is a hash: p (posted), h (held), v (its version) and, when a newer change
# could not be written there, f (the floor: PostgreSQL has, or may have, that version; "may"
# after a COMMIT whose reply was lost, when the floor can be one batch ahead until the next
# change reaches it). Readers serve it only while v >= f; below, they read PostgreSQL and fill.
# Versions and floors only ever move up, so a late or reordered write can never make the cache
# serve an older balance.
#
# For each change: when the caller's epoch (ARGV[1]) is the cache's, set the cached balance
# if the change is newer than what is cached; otherwise raise the floor to the change's
# version. Then publish the frame (always: subscribers drop versions they have seen, and a
# cache filled by a read-through may already hold this version). One call carries a whole
# batch: KEYS are the epoch then (balance, channel) pairs, ARGV the epoch then (version,
# posted, held, payload) quadruples, in order. Returns the epoch.
APPLY_EVENTS = (
    _EPOCH
    + """
local e = epoch()
local trusted = ARGV[1] == e
for i = 2, #KEYS, 2 do
  local a = (i - 2) * 2 + 1
  local v = tonumber(ARGV[a + 1])
  if trusted then
    if v > tonumber(redis.call('HGET', KEYS[i], 'v') or '-1') then
      redis.call('HSET', KEYS[i], 'p', ARGV[a + 2], 'h', ARGV[a + 3], 'v', ARGV[a + 1])
    end
  elseif v > tonumber(redis.call('HGET', KEYS[i], 'f') or '-1') then
    redis.call('HSET', KEYS[i], 'f', ARGV[a + 1])
  end
  redis.call('PUBLISH', KEYS[i + 1], ARGV[a + 4])
end
return e
"""
)

# The cached balance read. A script with a shebang and without the ``no-writes`` flag, which
# Redis 7 refuses whenever it refuses writes (out of memory, a read-only replica, writes
# stopped after a failed snapshot), where a plain HMGET would still answer: while this node's
# publishes fail, no node keeps serving the balance they could not move forward, each reads
# PostgreSQL instead. KEYS: the balance. Returns [posted, held, version, floor].
READ_BALANCE = """#!lua
return redis.call('HMGET', KEYS[1], 'p', 'h', 'v', 'f')
"""

# Read-through fill and rebuild: same epoch check and version guard, no publish. One call
# fills one balance (a read-through) or many (the rebuild: one call per few hundred members
# keeps the per-command cost off each). KEYS: epoch, then balances. ARGV: epoch, then
# (version, posted, held) triples. Returns the epoch; nothing is written when it differs.
FILL_BALANCE = (
    _EPOCH
    + """
local e = epoch()
if ARGV[1] ~= e then return e end
for i = 2, #KEYS do
  local a = (i - 2) * 3 + 1
  if tonumber(ARGV[a + 1]) > tonumber(redis.call('HGET', KEYS[i], 'v') or '-1') then
    redis.call('HSET', KEYS[i], 'p', ARGV[a + 2], 'h', ARGV[a + 3], 'v', ARGV[a + 1])
  end
end
return e
"""
)

# Raise floors (valid in any epoch: PostgreSQL has, or after a lost COMMIT reply may have,
# that version).
# KEYS: balances; ARGV: versions.
RAISE_FLOORS = """
for i = 1, #KEYS do
  if tonumber(ARGV[i]) > tonumber(redis.call('HGET', KEYS[i], 'f') or '-1') then
    redis.call('HSET', KEYS[i], 'f', ARGV[i])
  end
end
return #KEYS
"""

# Presence: KEYS[1]=presence hash of the member, KEYS[2]=the member's channel. Each field is a
# session id, its value "channel|node|expiry-ms"; the field "~seq" holds the sequence of the last
# announcement. Every change announces the full list of live entries on the member's channel as
# a ``presence`` frame, from inside Redis, with a growing ``seq`` (max(last + 1, Redis time in
# microseconds), so it keeps growing after the hash expired). The frame is built here (cjson
# quotes each string).
_PRESENCE_ANNOUNCE = """
local function announce(member, now)
  local all = redis.call('HGETALL', KEYS[1])
  local items = {}
  for i = 1, #all, 2 do
    local ch, node, exp = string.match(all[i + 1], '^([^|]*)|(.*)|(%d+)$')
    if ch and tonumber(exp) >= now then
      items[#items + 1] = '{"session":' .. cjson.encode(all[i]) .. ',"channel":' ..
        cjson.encode(ch) .. ',"node":' .. cjson.encode(node) .. '}'
    end
  end
  table.sort(items)
  local t = redis.call('TIME')
  local seq = math.max(tonumber(redis.call('HGET', KEYS[1], '~seq') or '0') + 1,
    tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[1], '~seq', string.format('%d', seq))
  redis.call('PUBLISH', KEYS[2], '{"type":"presence","member":' .. cjson.encode(member) ..
    ',"online":[' .. table.concat(items, ',') .. '],"seq":' .. string.format('%d', seq) .. '}')
end
local function sweep(now, keep)
  local all = redis.call('HGETALL', KEYS[1])
  local live, removed = 0, 0
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 1) ~= '~' then
      local exp = tonumber(string.match(all[i + 1], '|(%d+)$') or '0')
      if exp < now then
        redis.call('HDEL', KEYS[1], all[i])
        removed = removed + 1
      elseif all[i] ~= keep then
        live = live + 1
      end
    end
  end
  return live, removed
end
"""

# Join (and refresh): ARGV session, value, now-ms, limit (0 = none), member, key-ttl-ms,
# announce-if-new (1/0). Returns 0 when the member already has ``limit`` other live sessions
# (nothing written), 1 when added, 2 when the entry existed and was refreshed.
PRESENCE_JOIN = (
    _PRESENCE_ANNOUNCE
    + """
local now = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local live, removed = sweep(now, ARGV[1])
local existed = redis.call('HEXISTS', KEYS[1], ARGV[1])
if existed == 0 and limit > 0 and live >= limit then
  if removed > 0 then announce(ARGV[5], now) end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if existed == 0 or removed > 0 then announce(ARGV[5], now) end
if existed == 1 then return 2 end
return 1
"""
)

# Leave: ARGV session, now-ms, member. Announces when the entry was there.
PRESENCE_LEAVE = (
    _PRESENCE_ANNOUNCE
    + """
local now = tonumber(ARGV[2])
local _, removed = sweep(now, '')
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 or removed > 0 then announce(ARGV[3], now) end
return 1
"""
)

# Sweep: drop expired entries (sessions of a node that died); announce if any went.
# ARGV now-ms, member. Returns how many were removed.
PRESENCE_SWEEP = (
    _PRESENCE_ANNOUNCE
    + """
local now = tonumber(ARGV[1])
local _, removed = sweep(now, '')
if removed > 0 then announce(ARGV[2], now) end
return removed
"""
)


# A merchant-wide notice, in one call: appended to the capped notice log (``Keys.notice_log``,
# what a node replays after its fan-out connection was down) and published on the merchant's
# broadcast channel. One command, one reply: the admin's HTTP reply does not wait on several
# reads while the node writes the same notice to its own sessions. KEYS: the log; ARGV: the
# frame, the log's approximate cap, the channel (not a key: a cluster publishes to every node
# whatever its slot, and declared it would be in another slot than the log). Returns the
# PUBLISH count (nodes that got it).
PUBLISH_NOTICE = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'n', ARGV[1])
return redis.call('PUBLISH', ARGV[3], ARGV[1])
"""

# A member event, numbered: the member's counter (KEYS[1]) moves on by one and the event goes
# out carrying it, so a watcher can tell a missed event (a ``seq`` that is not the next one)
# from none. ARGV: the event frame's JSON (an object whose last field is not ``seq``), the
# member id (the protocol's id charset: nothing to escape), the channel (not a key, as for
# notices). The envelope is ``{"member": ..., "frame": <the frame with "seq": n>}``. Returns
# the seq. A Redis that lost its data starts the counters again at 1: the next event's seq is
# lower than a watcher's, which it takes as a gap too.
PUBLISH_MEMBER_EVENT = """
local seq = redis.call('INCR', KEYS[1])
local frame = string.sub(ARGV[1], 1, -2) .. ',"seq":' .. seq .. '}'
redis.call('PUBLISH', ARGV[3], '{"member":"' .. ARGV[2] .. '","frame":' .. frame .. '}')
return seq
"""
