-- The purchase history and the returns no longer read the ledger's operations: the ledger
-- writes a sale's row with its applied earn (in one transaction, since 5a8c946), and now also
-- records each return's state on its row, in the same transaction as the return's entry
-- (applied, or refused; pending until then).

-- Rows of a sale whose earn never applied could only come from releases that wrote the row
-- before the earn; every read joined the applied earn, so they never showed or counted.
DELETE FROM sales s
 WHERE NOT EXISTS (SELECT 1 FROM operations o
                    WHERE o.merchant_id = s.merchant_id AND o.op_id = s.op_id
                      AND o.ok AND o.kind = 'earn');

-- A constant default: no table rewrite. The check is NOT VALID (no validation scan under the
-- lock); rows of nodes of the previous release during a rollout take the default, 'pending',
-- and count as returns in flight do (they applied, or were deleted by their node when refused).
ALTER TABLE sale_returns ADD COLUMN state text NOT NULL DEFAULT 'pending';
ALTER TABLE sale_returns ADD CONSTRAINT sale_returns_state
    CHECK (state IN ('pending', 'applied', 'refused')) NOT VALID;

UPDATE sale_returns r
   SET state = CASE WHEN o.ok AND o.kind = 'return' THEN 'applied' ELSE 'refused' END
  FROM operations o
 WHERE o.merchant_id = r.merchant_id AND o.op_id = r.op_id;
