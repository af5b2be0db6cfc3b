-- Merchants, members, the points ledger, holds, idempotency records and the outbox.

CREATE TABLE merchants (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    currency        text NOT NULL DEFAULT 'USD',
    -- points per whole currency unit of a sale's total, before rules
    points_per_unit numeric(12, 4) NOT NULL DEFAULT 1 CHECK (points_per_unit >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE members (
    id          text PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX members_merchant ON members (merchant_id);

-- One points account per member. available = posted - held, and never below zero.
CREATE TABLE accounts (
    member_id   text PRIMARY KEY REFERENCES members (id),
    merchant_id text NOT NULL REFERENCES merchants (id),
    posted      bigint NOT NULL DEFAULT 0,
    held        bigint NOT NULL DEFAULT 0,
    version     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT held_not_negative CHECK (held >= 0),
    CONSTRAINT available_not_negative CHECK (posted - held >= 0)
);

-- Append-only. Each row is one change to one member account, balanced by the opposite change
-- to the merchant's contra account named in `contra` (issuance, redemption, expiry, ...), so
-- every row is a two-sided entry. Each row raises the member's version by exactly one.
CREATE TABLE ledger_entries (
    seq          bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000) PRIMARY KEY,
    merchant_id  text NOT NULL,
    member_id    text NOT NULL,
    version      bigint NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('earn', 'hold', 'release', 'redeem', 'expire',
                                               'return', 'adjustment', 'reward', 'refund',
                                               'merge_in', 'merge_out', 'points_expiry')),
    op_id        text NOT NULL,
    contra       text NOT NULL,
    posted_delta bigint NOT NULL,
    held_delta   bigint NOT NULL,
    posted_after bigint NOT NULL,
    held_after   bigint NOT NULL,
    channel      text NOT NULL DEFAULT '',
    store_id     text NOT NULL DEFAULT '',
    terminal_id  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    CONSTRAINT entry_version_unique UNIQUE (member_id, version),
    CONSTRAINT entry_changes_something CHECK (posted_delta <> 0 OR held_delta <> 0)
);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END $$;
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

-- A hold's id is the client's operation id of its reserve.
CREATE TABLE holds (
    merchant_id text NOT NULL,
    id          text NOT NULL,
    member_id   text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    committed   bigint NOT NULL DEFAULT 0 CHECK (committed >= 0 AND committed <= amount),
    status      text NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    resolved_at timestamptz,
    PRIMARY KEY (merchant_id, id)
);
CREATE INDEX holds_active_by_expiry ON holds (expires_at) WHERE status = 'active';
CREATE INDEX holds_active_by_member ON holds (member_id) WHERE status = 'active';

-- Idempotency: every mutating command's outcome, including refusals, keyed by the client's id.
CREATE TABLE operations (
    merchant_id text NOT NULL,
    op_id       text NOT NULL,
    kind        text NOT NULL,
    member_id   text,
    fingerprint bytea NOT NULL,
    ok          boolean NOT NULL,
    result      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, op_id)
);

-- Changes committed but not yet confirmed published to Redis. Written in the same transaction
-- as the entry; deleted once published. Any node republishes rows older than a few seconds.
CREATE TABLE outbox (
    member_id  text NOT NULL,
    version    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, version)
);
CREATE INDEX outbox_by_age ON outbox (created_at);
