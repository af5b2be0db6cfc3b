-- Purchase aggregates (gateway/aggregates): what each member bought, kept incrementally in the
-- transaction of the sale's (or the return's) ledger operation, as an attachment, so the
-- aggregates are exact and a retried sale never counts twice.
--
-- One row per member, day (UTC, days since 1970-01-01) and dimension: the day's totals
-- (dim 't', key ''), the day's purchases by channel (dim 'h', key 'pos' or 'web'), and by
-- category ('c'), brand ('b') and SKU ('s'). A sale adds its units, spend and one visit; a
-- return takes back its units and value on the day of the sale it returns (a visit stays a
-- visit). Lifetime figures are the sums over every day; "within N days" the sums over the
-- days since. Totals' spend is what was paid (the sale's total); a category's, brand's or
-- SKU's is the lines' price x quantity.
CREATE TABLE member_purchase_days (
    member_id   text NOT NULL REFERENCES members (id),
    dim         text NOT NULL CHECK (dim IN ('t', 'h', 'c', 'b', 's')),
    key         text NOT NULL,
    day         integer NOT NULL,
    merchant_id text NOT NULL REFERENCES merchants (id),
    units       bigint NOT NULL DEFAULT 0,
    spend       bigint NOT NULL DEFAULT 0,
    visits      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (member_id, dim, key, day)
);
CREATE INDEX member_purchase_days_merchant ON member_purchase_days (merchant_id, member_id);
