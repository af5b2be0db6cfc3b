-- Targeted offers (gateway/offers): a merchant's offers, the members an offer lists, and each
-- use of an offer by a sale.
--
-- A use is reserved before its sale is submitted to the ledger, in a transaction of its own
-- that locks the offer's row (so two registers racing for the last use are serialised: one
-- gets it, the other is refused), keyed by the sale's op id (a retried sale finds its own
-- reservation and never takes a second use). The sale's ledger operation then stamps the
-- use ``applied_at`` in its own transaction (an attachment, OFFER_USE); a sale the ledger
-- refuses gives its reservation back.

CREATE TABLE offers (
    merchant_id      text NOT NULL REFERENCES merchants (id),
    id               text NOT NULL,
    name             text NOT NULL DEFAULT '',
    description      text NOT NULL DEFAULT '',
    kind             text NOT NULL
                     CHECK (kind IN ('bonus_sku', 'bonus_category', 'fixed_bonus', 'multiplier')),
    sku              text,
    category         text,
    points           bigint CHECK (points BETWEEN 1 AND 10000000),
    multiplier       numeric(8, 4) CHECK (multiplier > 1 AND multiplier <= 10),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    channels         text[] NOT NULL,
    segments         text[] NOT NULL DEFAULT '{}',
    per_member_limit integer CHECK (per_member_limit >= 1),
    total_limit      integer CHECK (total_limit >= 1),
    -- uses reserved or applied (kept by the reservation's transaction, under the row's lock)
    used             bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, id),
    CHECK (ends_at > starts_at),
    CHECK ((kind = 'bonus_sku') = (sku IS NOT NULL)),
    CHECK ((kind = 'bonus_category') = (category IS NOT NULL)),
    CHECK ((kind = 'multiplier') = (multiplier IS NOT NULL)),
    CHECK ((kind = 'multiplier') = (points IS NULL))
);

CREATE TABLE offer_members (
    merchant_id text NOT NULL,
    offer_id    text NOT NULL,
    member_id   text NOT NULL REFERENCES members (id),
    PRIMARY KEY (merchant_id, offer_id, member_id),
    FOREIGN KEY (merchant_id, offer_id) REFERENCES offers (merchant_id, id) ON DELETE CASCADE
);
CREATE INDEX offer_members_member ON offer_members (merchant_id, member_id);

CREATE TABLE offer_uses (
    merchant_id text NOT NULL,
    offer_id    text NOT NULL,
    op_id       text NOT NULL,
    member_id   text NOT NULL,
    points      bigint NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz,
    PRIMARY KEY (merchant_id, offer_id, op_id),
    FOREIGN KEY (merchant_id, offer_id) REFERENCES offers (merchant_id, id)
);
CREATE INDEX offer_uses_member ON offer_uses (merchant_id, offer_id, member_id);
CREATE INDEX offer_uses_op ON offer_uses (merchant_id, op_id);
