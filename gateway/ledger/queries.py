"""The ledger's SQL, in one place. Each statement is prepared once per connection (asyncpg's
statement cache) and takes arrays, so one round trip serves a whole batch."""

# Everything a batch needs, in one statement (one snapshot, one round trip, no locks): the
# batch's clock, its members' accounts (src 'a'), the operations it names that exist already
# ('o'), the holds its commits/releases name, its members' overdue active holds and the active
# holds of merge sources ('h'). The write that follows is guarded by the versions read here.
NOW = "SELECT clock_timestamp()"

READ_BATCH = """
WITH t AS (SELECT clock_timestamp() AS now)
SELECT 'a' AS src, a.merchant_id, a.member_id AS id, NULL::bytea AS fingerprint,
       NULL::bytea AS result, a.merged_into AS member_id, a.posted AS amount,
       a.held AS committed, NULL::text AS status, t.now AS expires_at,
       NULL::timestamptz AS created_at, NULL::timestamptz AS resolved_at, a.version
  FROM accounts a CROSS JOIN t
 WHERE a.member_id = ANY($1::text[])
UNION ALL
SELECT 'o', o.merchant_id, o.op_id, o.fingerprint, o.result, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL
  FROM operations o
  JOIN unnest($2::text[], $3::text[]) AS k(merchant_id, op_id)
    ON o.merchant_id = k.merchant_id AND o.op_id = k.op_id
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at, NULL
  FROM holds h
  JOIN unnest($4::text[], $5::text[]) AS k(merchant_id, id)
    ON h.merchant_id = k.merchant_id AND h.id = k.id
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at, NULL
  FROM holds h CROSS JOIN t
 WHERE h.member_id = ANY($1::text[]) AND h.status = 'active' AND h.expires_at <= t.now
UNION ALL
SELECT 'h', h.merchant_id, h.id, NULL, NULL, h.member_id, h.amount, h.committed, h.status,
       h.expires_at, h.created_at, h.resolved_at, NULL
  FROM holds h
 WHERE h.member_id = ANY($6::text[]) AND h.status = 'active'
"""

# One autocommitted statement writes the whole batch: it is atomic on its own and its COMMIT
# is the statement's. Optimistic concurrency: every account is updated only if its version
# is still the one READ_BATCH saw, and every operation id must be newly claimed; otherwise
# ledger_guard aborts the statement (40001) and the engine re-reads and re-applies the batch
# (a duplicate operation is then replayed). A writer still in flight on the same account
# makes the update wait for it, then fail the version check.
WRITE_BATCH = """
WITH
ops AS (
  INSERT INTO operations (merchant_id, op_id, kind, member_id, fingerprint, ok, result)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                       $6::bool[], $7::bytea[])
  ON CONFLICT DO NOTHING
  RETURNING 1
),
acc AS (
  UPDATE accounts a
     SET posted = u.posted, held = u.held, version = u.version, merged_into = u.merged_into,
         updated_at = $31
    FROM unnest($8::text[], $9::int8[], $10::int8[], $11::int8[], $35::text[], $47::int8[])
         AS u(member_id, posted, held, version, merged_into, base)
   WHERE a.member_id = u.member_id AND a.version = u.base
  RETURNING 1
),
ent AS (
  INSERT INTO ledger_entries (merchant_id, member_id, version, kind, op_id, contra,
                              posted_delta, held_delta, posted_after, held_after,
                              channel, store_id, terminal_id, created_at)
  SELECT m, mb, v, k, o, c, pd, hd, pa, ha, ch, st, te, $31
    FROM unnest($12::text[], $13::text[], $14::int8[], $15::text[], $16::text[], $17::text[],
                $18::int8[], $19::int8[], $20::int8[], $21::int8[], $22::text[], $23::text[],
                $24::text[]) AS e(m, mb, v, k, o, c, pd, hd, pa, ha, ch, st, te)
  RETURNING 1
),
hld AS (
  INSERT INTO holds (merchant_id, id, member_id, amount, committed, status, expires_at,
                     created_at, resolved_at)
  SELECT * FROM unnest($25::text[], $26::text[], $27::text[], $28::int8[], $29::int8[],
                       $30::text[], $32::timestamptz[], $33::timestamptz[], $34::timestamptz[])
  ON CONFLICT (merchant_id, id) DO UPDATE
     SET committed = EXCLUDED.committed, status = EXCLUDED.status,
         resolved_at = EXCLUDED.resolved_at, member_id = EXCLUDED.member_id
  RETURNING 1
),
obx AS (
  INSERT INTO outbox (member_id, version, created_at)
  SELECT mb, v, $31 FROM unnest($13::text[], $14::int8[]) AS o(mb, v)
  RETURNING 1
),
sal AS (
  INSERT INTO sales (merchant_id, op_id, member_id, channel, store_id, terminal_id, total,
                     points, breakdown, lines, fingerprint, created_at)
  SELECT m, o, mb, ch, st, te, tot, pts, bd::jsonb, ln::jsonb, fp, $31
    FROM unnest($36::text[], $37::text[], $38::text[], $39::text[], $40::text[], $41::text[],
                $42::int8[], $43::int8[], $44::text[], $45::text[], $46::bytea[])
         AS s(m, o, mb, ch, st, te, tot, pts, bd, ln, fp)
  ON CONFLICT (merchant_id, op_id) DO NOTHING
  RETURNING 1
)
SELECT ledger_guard((SELECT count(*) FROM ops) = $48 AND (SELECT count(*) FROM acc) = $49)
       AS ok
"""

OPERATION_RESULT = """
SELECT result FROM operations WHERE merchant_id = $1 AND op_id = $2
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

OVERDUE_MEMBERS = """
SELECT DISTINCT merchant_id, member_id
  FROM (SELECT merchant_id, member_id FROM holds
         WHERE status = 'active' AND expires_at <= clock_timestamp()
         ORDER BY expires_at LIMIT $1) t
"""
