-- Earning rules (product / category multipliers, time-boxed promotions) and tiers.

CREATE TABLE earning_rules (
    merchant_id text NOT NULL REFERENCES merchants (id),
    id          text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('product', 'category', 'promotion')),
    name        text NOT NULL DEFAULT '',
    sku         text,
    category    text,
    multiplier  numeric(10, 4) NOT NULL DEFAULT 1 CHECK (multiplier >= 0),
    bonus       bigint NOT NULL DEFAULT 0 CHECK (bonus >= 0),
    min_total   bigint NOT NULL DEFAULT 0 CHECK (min_total >= 0),
    tier        text,
    starts_at   timestamptz,
    ends_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id),
    CONSTRAINT product_rule_has_sku CHECK (kind <> 'product' OR sku IS NOT NULL),
    CONSTRAINT category_rule_has_category CHECK (kind <> 'category' OR category IS NOT NULL)
);

CREATE TABLE tiers (
    merchant_id text NOT NULL REFERENCES merchants (id),
    id          text NOT NULL,
    name        text NOT NULL DEFAULT '',
    -- qualifying points within the window needed to hold the tier
    threshold   bigint NOT NULL CHECK (threshold >= 0),
    multiplier  numeric(10, 4) NOT NULL DEFAULT 1 CHECK (multiplier >= 0),
    PRIMARY KEY (merchant_id, id),
    UNIQUE (merchant_id, threshold)
);
