-- Loyalty programme settings per merchant, member profiles and identities (phone, email, card).

-- One row per merchant that configured its programme; a merchant without a row gets the
-- defaults below (see gateway/loyalty/programme.py).
CREATE TABLE programmes (
    merchant_id         text PRIMARY KEY REFERENCES merchants (id),
    -- ISO 3166 region used to read phone numbers typed without a country code
    region              text NOT NULL DEFAULT 'US',
    -- 'line': each rule's points are floored per sale line; 'sale': per sale
    rounding            text NOT NULL DEFAULT 'line' CHECK (rounding IN ('line', 'sale')),
    -- most points one sale may earn (after every rule); NULL = no cap
    max_points_per_sale bigint CHECK (max_points_per_sale IS NULL OR max_points_per_sale >= 0),
    -- rolling window of qualifying points for tiers
    tier_window_days    integer NOT NULL DEFAULT 365 CHECK (tier_window_days > 0),
    -- points expire after this many days without account activity; NULL = never
    expiry_days         integer CHECK (expiry_days IS NULL OR expiry_days > 0),
    -- validity of reward codes issued by default
    code_valid_days     integer NOT NULL DEFAULT 30 CHECK (code_valid_days > 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Personal data lives here and in member_identities only (erasable); the ledger keys on the
-- opaque member id.
CREATE TABLE member_profiles (
    member_id        text PRIMARY KEY REFERENCES members (id),
    merchant_id      text NOT NULL REFERENCES merchants (id),
    name             text NOT NULL DEFAULT '',
    tier             text NOT NULL DEFAULT '',
    tier_since       timestamptz,
    enrolled_channel text NOT NULL DEFAULT '',
    enrolled_store   text NOT NULL DEFAULT '',
    erased_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX member_profiles_merchant_tier ON member_profiles (merchant_id, tier);

-- Normalised identities; unique per merchant (race-safe enrolment), one per kind per member.
CREATE TABLE member_identities (
    merchant_id text NOT NULL REFERENCES merchants (id),
    kind        text NOT NULL CHECK (kind IN ('phone', 'email', 'card')),
    value       text NOT NULL,
    member_id   text NOT NULL REFERENCES members (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, kind, value)
);
CREATE UNIQUE INDEX member_identities_one_per_kind ON member_identities (member_id, kind);
