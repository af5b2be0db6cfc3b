-- Reorder loops (gateway/reorder), part one: the predicted repurchase date of every member and
-- replenishable product, and the queue of members whose purchases changed.
--
-- The sale path records nothing of its own for this: a statement-level trigger on ``sales``
-- (whose rows the ledger writes, one INSERT per group-committed batch) appends the batch's
-- members to ``reorder_events`` in the same transaction, one INSERT for the whole batch. The
-- table has no unique key besides its sequence, so that INSERT never waits on anyone (not on
-- a worker claiming rows either). A worker on every node claims rows with FOR UPDATE SKIP
-- LOCKED, deletes them and recomputes those members' predictions from their whole history, in
-- one transaction (docs/reorder.md). A merge re-points sales (an UPDATE of member_id): both
-- members are queued, so the duplicate's predictions go and the survivor's count its sales.

CREATE TABLE reorder_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id text NOT NULL,
    member_id   text NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION reorder_sales_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reorder_events (merchant_id, member_id)
    SELECT DISTINCT merchant_id, member_id FROM reorder_new_sales WHERE lines <> '[]'::jsonb;
    RETURN NULL;
END $$;
CREATE TRIGGER reorder_sales_inserted AFTER INSERT ON sales
    REFERENCING NEW TABLE AS reorder_new_sales
    FOR EACH STATEMENT EXECUTE FUNCTION reorder_sales_inserted();

CREATE FUNCTION reorder_sales_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reorder_events (merchant_id, member_id)
    SELECT DISTINCT x.merchant_id, x.member_id
      FROM reorder_old_sales o JOIN reorder_new_sales n USING (seq),
           LATERAL (VALUES (o.merchant_id, o.member_id), (n.merchant_id, n.member_id))
               AS x(merchant_id, member_id)
     WHERE o.member_id <> n.member_id;
    RETURN NULL;
END $$;
CREATE TRIGGER reorder_sales_moved AFTER UPDATE ON sales
    REFERENCING OLD TABLE AS reorder_old_sales NEW TABLE AS reorder_new_sales
    FOR EACH STATEMENT EXECUTE FUNCTION reorder_sales_moved();

-- One row per member and replenishable product the member bought. ``last_purchase_at`` and
-- ``units``: the last purchase (purchases less than a day apart count as one); ``purchases``
-- and ``intervals``: how many of them and of the gaps between them; ``per_unit_days``: the
-- median of the member's gaps, each divided by the units bought at its start (NULL with no
-- gap); ``cycle_days``: the catalogue's, when computed. ``predicted_at`` = last purchase +
-- the days one unit lasts x units, the days per unit being the member's own median with 3
-- gaps or more (``method`` 'member'), else the 75th percentile of the product's buyers'
-- (``reorder_population``, with at least 20 buyers: 'population'), else the catalogue's
-- cycle ('catalogue').
CREATE TABLE reorder_predictions (
    merchant_id      text NOT NULL REFERENCES merchants (id),
    member_id        text NOT NULL REFERENCES members (id),
    sku              text NOT NULL,
    last_purchase_at timestamptz NOT NULL,
    units            integer NOT NULL CHECK (units > 0),
    purchases        integer NOT NULL CHECK (purchases > 0),
    intervals        integer NOT NULL CHECK (intervals >= 0),
    per_unit_days    double precision CHECK (per_unit_days >= 0),
    cycle_days       integer NOT NULL,
    predicted_at     timestamptz NOT NULL,
    method           text NOT NULL CHECK (method IN ('member', 'population', 'catalogue')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, member_id, sku)
);
-- The scheduler reads the predictions of a product coming due, in date order.
CREATE INDEX reorder_predictions_due ON reorder_predictions (merchant_id, sku, predicted_at);
CREATE INDEX reorder_predictions_by_member ON reorder_predictions (member_id);

-- Per product, the distribution of its buyers' own days per unit (one value per buyer with at
-- least one gap: a heavy buyer does not weigh more than another): how many buyers, and its
-- 75th percentile (as Stamped reminds at the 75th percentile of reorder intervals).
-- Recomputed from reorder_predictions by the worker, hourly.
CREATE TABLE reorder_population (
    merchant_id   text NOT NULL REFERENCES merchants (id),
    sku           text NOT NULL,
    buyers        integer NOT NULL,
    per_unit_days double precision NOT NULL,
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, sku)
);
