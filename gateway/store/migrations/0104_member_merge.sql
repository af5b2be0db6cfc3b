-- Merging duplicate members: the duplicate (source) account is emptied into the surviving
-- member by one ledger operation and marked merged; every later operation naming it is refused
-- (`member_merged`). The loyalty rows (identities, sales, returns, codes) are re-pointed after
-- that operation committed, keyed by its op id (`member_merges`), so a re-run completes them.

ALTER TABLE accounts ADD COLUMN merged_into text REFERENCES members (id);
ALTER TABLE accounts ADD CONSTRAINT not_merged_into_itself CHECK (merged_into <> member_id);
-- A merged account holds nothing.
ALTER TABLE accounts ADD CONSTRAINT merged_account_is_empty
    CHECK (merged_into IS NULL OR (posted = 0 AND held = 0));

CREATE TABLE member_merges (
    merchant_id  text NOT NULL REFERENCES merchants (id),
    op_id        text NOT NULL,
    source_id    text NOT NULL REFERENCES members (id),
    survivor_id  text NOT NULL REFERENCES members (id),
    -- rows re-pointed (identities, sales, returns, codes), set when the loyalty side finished
    moved        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (merchant_id, op_id),
    UNIQUE (source_id)
);
CREATE INDEX member_merges_by_survivor ON member_merges (survivor_id);
