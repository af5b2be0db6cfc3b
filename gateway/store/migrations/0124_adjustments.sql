-- Manual points adjustments (gateway/adjustments): a goodwill credit, a correction, a debit
-- for points earned by mistake. The points are a ledger operation (entry kind 'adjustment');
-- this row rides on it (written in its transaction), so an adjustment's reason and author
-- exist exactly when its points were posted, once per operation id.
CREATE TABLE point_adjustments (
    merchant_id text NOT NULL REFERENCES merchants (id),
    op_id       text NOT NULL,
    member_id   text NOT NULL REFERENCES members (id),
    points      bigint NOT NULL CHECK (points <> 0),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    actor       text NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, op_id)
);
CREATE INDEX point_adjustments_by_member ON point_adjustments (member_id, at DESC);
