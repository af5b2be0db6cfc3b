-- Unified purchase history (every channel) and returns against it.

-- One row per sale, keyed by the sale's operation id: a retry finds the row and posts the same
-- points again (the ledger applies the op once). A sale counts once its ledger operation
-- committed (operations.ok); history joins on that.
CREATE TABLE sales (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id text NOT NULL,
    op_id       text NOT NULL,
    member_id   text NOT NULL REFERENCES members (id),
    channel     text NOT NULL DEFAULT '',
    store_id    text NOT NULL DEFAULT '',
    terminal_id text NOT NULL DEFAULT '',
    total       bigint NOT NULL CHECK (total >= 0),
    points      bigint NOT NULL,
    -- [{"rule":..,"points":..,"sku":..}]
    breakdown   jsonb NOT NULL,
    -- [{"sku":..,"qty":..,"price":..,"category":..,"name":..}]
    lines       jsonb NOT NULL,
    -- digest of the request content, for idempotency conflicts
    fingerprint bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, op_id)
);
CREATE INDEX sales_by_member ON sales (member_id, seq DESC);

-- One row per return, written (under the sale's row lock) before its ledger operation, keyed
-- by the return's operation id.
CREATE TABLE sale_returns (
    merchant_id text NOT NULL,
    op_id       text NOT NULL,
    sale_op     text NOT NULL,
    member_id   text NOT NULL REFERENCES members (id),
    -- {"sku": qty, ...} returned by this return ({} for a sale without lines)
    lines       jsonb NOT NULL,
    value       bigint NOT NULL CHECK (value >= 0),
    clawback    bigint NOT NULL CHECK (clawback >= 0),
    restored    bigint NOT NULL CHECK (restored >= 0),
    redemption  text,
    fingerprint bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, op_id)
);
CREATE INDEX sale_returns_by_sale ON sale_returns (merchant_id, sale_op);
CREATE INDEX sale_returns_by_member ON sale_returns (member_id, created_at);
