-- Reward catalogue and single-use reward codes.

CREATE TABLE rewards (
    merchant_id text NOT NULL REFERENCES merchants (id),
    id          text NOT NULL,
    name        text NOT NULL DEFAULT '',
    cost        bigint NOT NULL CHECK (cost > 0),
    kind        text NOT NULL CHECK (kind IN ('amount_off', 'percent_off', 'free_item')),
    value       bigint NOT NULL DEFAULT 0 CHECK (value >= 0),
    sku         text,
    min_tier    text,
    valid_days  integer CHECK (valid_days IS NULL OR valid_days > 0),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id)
);

-- A code is issued by the ledger operation that spent its points (issue_op) and changes state
-- once: issued -> redeemed or issued -> voided, each by one conditional UPDATE.
CREATE TABLE reward_codes (
    merchant_id       text NOT NULL,
    code              text NOT NULL,
    member_id         text NOT NULL REFERENCES members (id),
    reward_id         text NOT NULL,
    points            bigint NOT NULL CHECK (points > 0),
    status            text NOT NULL CHECK (status IN ('issued', 'redeemed', 'voided')),
    issue_op          text NOT NULL,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    redeemed_at       timestamptz,
    redeemed_op       text,
    redeemed_channel  text,
    redeemed_store    text,
    redeemed_terminal text,
    voided_at         timestamptz,
    void_op           text,
    PRIMARY KEY (merchant_id, code),
    UNIQUE (merchant_id, issue_op)
);
CREATE INDEX reward_codes_by_member ON reward_codes (member_id, status);
