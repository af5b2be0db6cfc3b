"""The ledger's SQL, in one place. Each statement is prepared once per connection (asyncpg's
statement cache) and takes arrays, so one round trip serves a whole batch."""

from collections.abc import Sequence

# Set on every lane connection, which runs only the statements below. Generic plans: planning
# each batch's statements anew cost about as much as running them. A generic plan is chosen
# once, from the table sizes of that moment, and is not re-planned as a young table grows:
# planned while ``holds`` was small, a commit's hold lookup was a sequential scan and hash
# join over every hold, 1.8 ms per batch at 11,000 holds and growing with the table. Every
# statement here finds its rows by key, so the lanes rule out sequential scans, hash joins
# and merge joins, and each lookup by key is a lateral subquery (OFFSET 0 keeps the planner
# from flattening it) or carries its keys as ``= ANY``: the plans are index lookups whatever
# the statistics said. tests/ledger/test_plans.py checks them on a new database, on one
# analyzed while empty (where a join order walked a whole index instead) and on one with rows.
LANE_SETTINGS = (
    "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off;"
    " SET enable_hashjoin = off; SET enable_mergejoin = off;"
    " SET idle_in_transaction_session_timeout = 0"
)

NOW = "SELECT clock_timestamp()"

# Everything a batch reads, read again after its locks when LOCK_AND_FIND's snapshot was
# stale: the operations it names that already exist (src 'o'), the holds its commits/releases
# name, the overdue active holds of the members in $5 (the locked ones) and every active hold
# of a merge's source (src 'h').
FIND_OPS_AND_HOLDS = """
SELECT 'o' AS src, o.merchant_id, o.op_id AS id, o.fingerprint, o.result,
       NULL::text AS member_id, NULL::int8 AS amount, NULL::int8 AS committed,
       NULL::text AS status, NULL::timestamptz AS expires_at, NULL::timestamptz AS created_at,
       NULL::timestamptz AS resolved_at
  FROM unnest($1::text[], $2::text[]) AS k(merchant_id, op_id)
 CROSS JOIN LATERAL (SELECT * FROM operations o
                      WHERE o.merchant_id = k.merchant_id AND o.op_id = k.op_id OFFSET 0) o
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at
  FROM unnest($3::text[], $4::text[]) AS k(merchant_id, id)
 CROSS JOIN LATERAL (SELECT * FROM holds h
                      WHERE h.merchant_id = k.merchant_id AND h.id = k.id OFFSET 0) h
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at
  FROM holds h
 WHERE h.status = 'active'
   AND h.member_id = ANY(array_cat($5::text[], $7::text[]))  -- holds_active_by_member
   AND (h.expires_at <= $6 OR h.member_id = ANY($7::text[]))
"""

# The lock and the reads in one round trip. Under READ COMMITTED the reads beside a lock wait
# come from the statement's snapshot, taken before the wait: a batch that committed on the
# same member meanwhile (it held that member's lock, so it changed the member's version) is
# not in them. So each locked row also carries ``seen``, its version in that snapshot (a plain
# read of the same row): where ``version`` (the locked, newest row) differs, the engine throws
# the reads away and runs FIND_OPS_AND_HOLDS after the locks. Every change to a member's holds
# or account goes through a batch holding its lock and writes an entry (version + 1);
# operation ids are claimed by WRITE_BATCH's insert, which catches a concurrent claim either
# way. One clock reading per batch (the CTE runs once), taken once the locks are held: a
# reading from before a lock wait would judge a hold's expiry by a time already past (a commit
# that waited 2.5 s on a stalled batch was accepted 1.5 s after its hold expired, and a
# reserve that waited was born expired). The overdue holds returned are those past that
# instant, which lazy expiry then expires. Rows: src 'a' (locked accounts), 'o' (operations),
# 'h' (holds), as in FIND_OPS_AND_HOLDS.
LOCK_AND_FIND = """
WITH locked AS MATERIALIZED (
  SELECT a.member_id, a.merchant_id, a.posted, a.held, a.version, a.merged_into,
         a.closed_at IS NOT NULL AS closed, a.owed,
         (SELECT s.version FROM accounts s WHERE s.member_id = a.member_id) AS seen
    FROM accounts a
   WHERE a.member_id = ANY($1::text[])
   ORDER BY a.member_id
     FOR UPDATE OF a
),
t AS MATERIALIZED (SELECT clock_timestamp() AS now FROM (SELECT count(*) FROM locked) l)
SELECT 'a' AS src, l.merchant_id, l.member_id AS id, NULL::bytea AS fingerprint,
       NULL::bytea AS result, l.member_id, NULL::int8 AS amount, NULL::int8 AS committed,
       NULL::text AS status, NULL::timestamptz AS expires_at, NULL::timestamptz AS created_at,
       NULL::timestamptz AS resolved_at, l.posted, l.held, l.version, l.merged_into,
       l.seen, t.now, l.closed, l.owed
  FROM locked l CROSS JOIN t
UNION ALL
SELECT 'o', o.merchant_id, o.op_id, o.fingerprint, o.result, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM unnest($2::text[], $3::text[]) AS k(merchant_id, op_id)
 CROSS JOIN LATERAL (SELECT * FROM operations o
                      WHERE o.merchant_id = k.merchant_id AND o.op_id = k.op_id OFFSET 0) o
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL
  FROM unnest($4::text[], $5::text[]) AS k(merchant_id, id)
 CROSS JOIN LATERAL (SELECT * FROM holds h
                      WHERE h.merchant_id = k.merchant_id AND h.id = k.id OFFSET 0) h
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL
  FROM holds h CROSS JOIN t
 WHERE h.status = 'active'
   AND h.member_id = ANY(array_cat($1::text[], $6::text[]))  -- holds_active_by_member
   AND (h.expires_at <= t.now                                -- overdue: lazy expiry
        OR h.member_id = ANY($6::text[]))                    -- any of a merge's source
"""

# One statement writes the whole batch. The operations insert must claim every id: a
# concurrent transaction that committed the same id makes the count short, and the engine
# rolls back and re-runs the batch (which then replays that operation).
#
# The rows come as one JSON document per table ($2 operations, $5 entries, $6 holds, then one
# per attachment kind; bytea as hex; entries and holds are the engine's dataclasses, keyed by
# field name), not as one array per column: asyncpg encodes each array parameter
# on its own, and the 46 columns cost the node about 48 us of CPU per batch of one operation
# (180 us for ten), where orjson writes the same rows in 1 to 13 us (2026-11-24 probe). At the
# end-to-end rates a batch holds one or two operations, so that was a large share of a lane's
# CPU.
#
# The accounts are found by key (``= ANY($4)``) and each row's new values are looked up in $3,
# a jsonb object member -> [posted, held, version, merged_into]. It was an UPDATE ... FROM
# unnest(...) join: under the lanes' settings its only plans are nested loops, and the planner
# chose one that compared every row with every row (a Join Filter; 29,890 rows removed and
# 12.4 ms of a 34.8 ms statement for a batch of 245 members, 2026-11-24), so the batches that
# grow under load got slower per operation exactly when the lane fell behind.
#
# Other packages' rows that ride on an operation (``model.AttachmentKind``: a sale's purchase
# history, a return's state) are written by statements of theirs, added here as CTEs, one
# parameter each from $7 on: the ledger never spells their tables. So are the entry taps
# (``model.EntryTap``: the webhooks' events), which read the batch's entries (``e``).
_WRITE_BATCH = """
WITH
ops AS (
  INSERT INTO operations (merchant_id, op_id, kind, member_id, fingerprint, ok, result,
                          created_at)
  SELECT m, o, k, mb, decode(fp, 'hex'), ok, decode(r, 'hex'), $1
    FROM json_to_recordset($2::json) AS x(m text, o text, k text, mb text, fp text, ok bool,
                                          r text)
  ON CONFLICT DO NOTHING
  RETURNING 1
),
acc AS (
  UPDATE accounts a
     SET posted = ($3::jsonb -> a.member_id ->> 0)::int8,
         held = ($3::jsonb -> a.member_id ->> 1)::int8,
         version = ($3::jsonb -> a.member_id ->> 2)::int8,
         merged_into = $3::jsonb -> a.member_id ->> 3,
         owed = ($3::jsonb -> a.member_id ->> 4)::int8,
         updated_at = $1
   WHERE a.member_id = ANY($4::text[])
  RETURNING 1
),
e AS MATERIALIZED (
  SELECT * FROM json_to_recordset($5::json)
           AS e(merchant text, member text, version int8, kind text, op text, contra text,
                posted_delta int8, held_delta int8, posted_after int8, held_after int8,
                channel text, store text, terminal text)
),
ent AS (
  INSERT INTO ledger_entries (merchant_id, member_id, version, kind, op_id, contra,
                              posted_delta, held_delta, posted_after, held_after,
                              channel, store_id, terminal_id, created_at)
  SELECT merchant, member, version, kind, op, contra, posted_delta, held_delta, posted_after,
         held_after, channel, store, terminal, $1
    FROM e
  RETURNING 1
),
hld AS (
  INSERT INTO holds (merchant_id, id, member_id, amount, committed, status, expires_at,
                     created_at, resolved_at)
  SELECT merchant, id, member, amount, committed, status, expires_at, created_at, resolved_at
    FROM json_to_recordset($6::json)
         AS h(merchant text, id text, member text, amount int8, committed int8, status text,
              expires_at timestamptz, created_at timestamptz, resolved_at timestamptz)
  ON CONFLICT (merchant_id, id) DO UPDATE
     SET committed = EXCLUDED.committed, status = EXCLUDED.status,
         resolved_at = EXCLUDED.resolved_at, member_id = EXCLUDED.member_id
  RETURNING 1
),
obx AS (
  INSERT INTO outbox (member_id, version, created_at)
  SELECT member, version, $1 FROM e
  RETURNING 1
){attached}
SELECT (SELECT count(*) FROM ops) AS ops, (SELECT count(*) FROM acc) AS accounts,
       (SELECT count(*) FROM ent) AS entries, (SELECT count(*) FROM hld) AS holds,
       (SELECT count(*) FROM obx) AS outbox
"""

#: Parameters of the batch statement before the attachments' (see ``write_batch``).
WRITE_BATCH_PARAMS = 6


def write_batch(kinds: Sequence[tuple[str, str]], taps: Sequence[tuple[str, str]] = ()) -> str:
    """The batch statement with the attachment kinds' statements (name, sql) as CTEs, the
    first reading parameter $7, the next $8, ..., and the entry taps' (name, sql), which read
    the CTE ``e`` (see ``model.EntryTap``)."""
    ctes = "".join(
        f",\nat_{name} AS (\n{sql.format(rows=f'${WRITE_BATCH_PARAMS + 1 + i}', at='$1')}\n)"
        for i, (name, sql) in enumerate(kinds)
    )
    ctes += "".join(f",\ntap_{name} AS (\n{sql.format(at='$1')}\n)" for name, sql in taps)
    return _WRITE_BATCH.replace("{attached}", ctes)


OPERATION_RESULT = """
SELECT result FROM operations WHERE merchant_id = $1 AND op_id = $2
"""

# Reads.outcome's wait for a transaction that is inserting this operation (rolled back): the
# insert blocks on the uncommitted row of the same key until its transaction ends.
PROBE_OPERATION = """
INSERT INTO operations (merchant_id, op_id, kind, member_id, fingerprint, ok, result)
VALUES ($1, $2, 'probe', NULL, ''::bytea, false, ''::bytea)
ON CONFLICT DO NOTHING
"""

ACCOUNT = """
SELECT a.member_id, a.merchant_id, a.posted, a.held, a.version FROM accounts a
 WHERE a.member_id = $1
"""

HISTORY = """
SELECT version, kind, op_id, channel, store_id, posted_after, held_after, created_at
  FROM ledger_entries
 WHERE member_id = $1 AND version > $2
 ORDER BY version
 LIMIT $3
"""

# Where each of $1's members was merged into, followed to the end of the chain (a survivor may
# itself be merged later), by primary key; only members that were merged come back. The
# ledger's hold answers after a merge and ``loyalty.directory.resolve`` both use it.
SURVIVORS = """
WITH RECURSIVE chain(start, member_id, depth) AS (
  SELECT a.member_id, a.merged_into, 1 FROM accounts a
   WHERE a.member_id = ANY($1::text[]) AND a.merged_into IS NOT NULL
  UNION ALL
  SELECT c.start, a.merged_into, c.depth + 1 FROM chain c JOIN accounts a USING (member_id)
   WHERE a.merged_into IS NOT NULL AND c.depth < 32
)
SELECT DISTINCT ON (start) start, member_id AS survivor FROM chain ORDER BY start, depth DESC
"""

OVERDUE_MEMBERS = """
SELECT DISTINCT merchant_id, member_id
  FROM (SELECT merchant_id, member_id FROM holds
         WHERE status = 'active' AND expires_at > '-infinity'  -- holds_active_by_expiry
           AND expires_at <= clock_timestamp()
         ORDER BY expires_at LIMIT $1) t
"""
