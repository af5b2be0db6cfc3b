-- Webhooks to merchant systems (gateway/webhooks): a merchant's endpoints, the events to send
-- and one delivery per event and subscribed endpoint.
--
-- An event row is written in the transaction of the change it announces (a points change:
-- by a statement of this package the ledger runs in each batch, ``webhooks.POINTS_TAP``), and
-- its deliveries are written by the trigger below in that same statement: a committed change
-- always has its deliveries, and a rolled-back one has none.

-- A merchant's endpoint. ``secret`` signs every delivery; after a rotation the previous secret
-- keeps signing too (a second v1 in the signature header) until ``previous_until``.
CREATE TABLE webhook_endpoints (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL REFERENCES merchants (id),
    url             text NOT NULL,
    events          text[] NOT NULL CHECK (cardinality(events) > 0),
    description     text NOT NULL DEFAULT '',
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- The ledger's batch statement asks it, for every entry, whether the merchant has an endpoint
-- subscribed to points.changed: an index lookup, also when it has none.
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id);

-- An event: its id (the receivers' deduplication key, the same on every attempt and replay),
-- the member it is about, its type and its data. Written only when the merchant has an
-- endpoint subscribed to the type.
CREATE TABLE webhook_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id text NOT NULL,
    member_id   text NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX webhook_events_by_age ON webhook_events (created_at);

-- One event to one endpoint. ``id`` orders a member's deliveries to an endpoint: only the
-- oldest pending one of an (endpoint, member) may be attempted. ``next_at``: when it is due
-- (while an attempt is in flight, the end of its lease: a node that dies mid-attempt leaves
-- it due again after that).
CREATE TABLE webhook_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- no CACHE: ids in order of writing
    merchant_id  text NOT NULL,
    endpoint_id  text NOT NULL,
    event_id     uuid NOT NULL,
    member_id    text NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_status  integer,
    last_error   text,
    -- the first attempt: the retry period runs from it (a delivery waiting behind an older one
    -- of its member loses none of it); a replay starts it anew
    first_at     timestamptz,
    last_at      timestamptz,
    delivered_at timestamptz
);
-- a claim's look at one endpoint's due deliveries, oldest first
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_at)
    WHERE state = 'pending';
-- whether a delivery is its (endpoint, member)'s oldest pending one (the member first: the
-- claim's endpoint scan above cannot serve this lookup, so no plan mistakes one for the other)
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (member_id, endpoint_id, id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, state, id);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
-- the workers prune deliveries delivered 7 days ago, and then their events
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (delivered_at)
    WHERE state = 'delivered';

-- Every event fans out to the merchant's endpoints subscribed to its type, in the statement
-- that writes it (row-level: a statement that writes no event costs nothing).
CREATE FUNCTION webhook_events_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (merchant_id, endpoint_id, event_id, member_id, next_at,
                                    created_at)
    SELECT NEW.merchant_id, w.id, NEW.id, NEW.member_id, NEW.created_at, NEW.created_at
      FROM webhook_endpoints w
     WHERE w.merchant_id = NEW.merchant_id AND w.events @> ARRAY[NEW.type];
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_events_fan_out AFTER INSERT ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION webhook_events_fan_out();
