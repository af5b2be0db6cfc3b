-- Points a return could not take back because the member had already spent or reserved them
-- (the clawback is capped at the available points): owed, and taken from the next points that
-- become available (an earn, a released or expired hold, a refund), each time as a `recovery`
-- entry. So the member never holds available points while owing any: a voided code's refund or
-- a released hold cannot bring back points a return took back.
ALTER TABLE accounts ADD COLUMN owed bigint NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD CONSTRAINT owed_not_negative CHECK (owed >= 0);
ALTER TABLE accounts ADD CONSTRAINT owing_means_nothing_available CHECK (owed = 0 OR posted = held);
ALTER TABLE accounts ADD CONSTRAINT merged_account_owes_nothing
    CHECK (merged_into IS NULL OR owed = 0);

ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('earn', 'hold', 'release', 'redeem', 'expire', 'return', 'adjustment',
                    'reward', 'refund', 'merge_in', 'merge_out', 'points_expiry', 'recovery'))
    NOT VALID;
ALTER TABLE ledger_entries VALIDATE CONSTRAINT ledger_entries_kind_check;
