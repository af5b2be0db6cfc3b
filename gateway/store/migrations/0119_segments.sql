-- Segments (gateway/segments): a merchant's segment definitions (a typed condition tree,
-- validated whole before it is stored), who is in each, and the RFM quintile boundaries the
-- last full pass computed (held between passes: the live path scores against them).

CREATE TABLE segments (
    merchant_id text NOT NULL REFERENCES merchants (id),
    id          text NOT NULL,
    name        text NOT NULL DEFAULT '',
    condition   jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- when a full pass last finished with this definition (NULL: not yet)
    computed_at timestamptz,
    PRIMARY KEY (merchant_id, id)
);

-- Membership: written by the live path (one member, after its sale, return, tier change,
-- profile edit or merge) and by full passes (a definition change, on demand, nightly), both
-- under the member's advisory lock, so neither writes a result older than the other's.
CREATE TABLE segment_members (
    merchant_id text NOT NULL,
    segment_id  text NOT NULL,
    member_id   text NOT NULL REFERENCES members (id),
    since       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, segment_id, member_id),
    FOREIGN KEY (merchant_id, segment_id) REFERENCES segments (merchant_id, id) ON DELETE CASCADE
);
CREATE INDEX segment_members_member ON segment_members (member_id);

CREATE TABLE segment_rfm (
    merchant_id text PRIMARY KEY REFERENCES merchants (id),
    recency     integer[] NOT NULL,
    frequency   bigint[] NOT NULL,
    monetary    bigint[] NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);
