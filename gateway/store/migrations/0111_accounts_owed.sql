-- Points a return could not take back because the member had already spent or reserved them
-- (the clawback is capped at the available points): owed, and taken from the next points that
-- become available (an earn, a released or expired hold, a refund), each time as a `recovery`
-- entry. The ledger (gateway/ledger/apply.py) keeps a member who owes from holding any
-- available point; that rule is not a CHECK yet, because nodes of the previous release keep
-- running against this schema during a rollout and never write `owed`: a CHECK would fail
-- their whole batches. It can become one once no such node runs. Meanwhile such a node may leave
-- a member owing with points available (the next operation on a new node takes them first),
-- and its merges do not move a duplicate's debt to the survivor (that debt is then dropped).
--
-- Every statement here is cheap under its lock: the column has a constant default (no table
-- rewrite), and the constraints are NOT VALID (existing rows satisfy them: every `owed` is 0,
-- and the new list of kinds only adds one), so no scan of `accounts` or `ledger_entries` holds
-- their ACCESS EXCLUSIVE lock; new rows are checked.
ALTER TABLE accounts ADD COLUMN owed bigint NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD CONSTRAINT owed_not_negative CHECK (owed >= 0) NOT VALID;

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('earn', 'hold', 'release', 'redeem', 'expire', 'return', 'adjustment',
                    'reward', 'refund', 'merge_in', 'merge_out', 'points_expiry', 'recovery'))
    NOT VALID;
