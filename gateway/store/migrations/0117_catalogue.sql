-- The product catalogue per merchant (gateway/catalogue): its products, and the bulk imports
-- that load them through the admin API.

-- One row per SKU of a merchant. ``sku`` and ``category`` have the charset and length of a
-- sale line's (protocol.limits ID_PATTERN, 64 characters: the earning rules match them);
-- ``name`` and ``brand`` are free text of up to 200 characters; ``price`` in minor units of
-- the programme's currency. ``cycle_days``: how many days a replenishable product lasts (the
-- reorder loop's), required when and only when ``replenishable``. An inactive product is
-- kept for the record (its category still applies to a sale line of it).
CREATE TABLE catalogue_products (
    merchant_id   text NOT NULL REFERENCES merchants (id),
    sku           text NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    category      text CHECK (length(category) BETWEEN 1 AND 64),
    brand         text CHECK (length(brand) BETWEEN 1 AND 200),
    price         bigint NOT NULL CHECK (price BETWEEN 0 AND 100000000),
    replenishable boolean NOT NULL DEFAULT false,
    cycle_days    integer CHECK (cycle_days BETWEEN 1 AND 3650),
    active        boolean NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, sku),
    CHECK (replenishable = (cycle_days IS NOT NULL))
);
-- The listing filtered by category, in SKU order.
CREATE INDEX catalogue_products_by_category ON catalogue_products (merchant_id, category, sku);

-- One row per import id a merchant chose. While an import runs its counts move after each
-- batch (any node reads them); its products are written in one transaction, which commits
-- with the row's ``done``: a failed import (the body cut off or too large, the node gone)
-- changed no product. ``rejections``: the first 1,000 rejected rows (line, sku when it could
-- be read, error, message). ``fingerprint``: the body's digest, so a retry of a finished
-- import is recognised (and a different body under the same id refused).
CREATE TABLE catalogue_imports (
    merchant_id text NOT NULL REFERENCES merchants (id),
    import_id   text NOT NULL,
    format      text NOT NULL CHECK (format IN ('jsonl', 'csv')),
    state       text NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    rows_read   bigint NOT NULL DEFAULT 0,
    created     bigint NOT NULL DEFAULT 0,
    updated     bigint NOT NULL DEFAULT 0,
    unchanged   bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    rejections  jsonb NOT NULL DEFAULT '[]',
    error       text,
    message     text,
    fingerprint bytea,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (merchant_id, import_id)
);
