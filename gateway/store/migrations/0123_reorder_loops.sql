-- Reorder loops (gateway/reorder), part two: the merchants' loops.

-- One row per loop a merchant set through the admin API. ``spec``: the loop as set
-- (gateway/reorder/loops.py LoopSpec: products, lead days, messages and their templates,
-- incentive, channels, quiet hours, cap, control share), checked before it is stored.
CREATE TABLE reorder_loops (
    merchant_id text NOT NULL REFERENCES merchants (id),
    loop_id     text NOT NULL CHECK (length(loop_id) BETWEEN 1 AND 64),
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, loop_id)
);

-- One row per reminder: a loop's member and product in one predicted cycle. ``cycle``: the
-- member's purchases of the product when it was predicted (a purchase starts the next
-- cycle), so the unique key (merchant, loop, member, sku, cycle) lets every node's scheduler
-- try to create it and only one succeed, once, whatever restarts. ``control``: the member is
-- in the loop's control group (no message; tracked the same). ``state``: 'scheduled' (its
-- messages to come: ``step`` made so far, the next due at ``next_at``), 'done' (the sequence
-- ended) or 'cancelled' (the member bought the product, or the loop went, before any
-- message). ``reordered_at``: the purchase of the product that came after it (the latest,
-- when several came before the worker saw them), if one did; ``reward_state``: whether it
-- earned the reward promised ('granted'), did not ('none': control, no message sent, outside
-- the window, no incentive) or the ledger refused it ('refused'); NULL: not decided yet.
CREATE TABLE reorder_reminders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id      text NOT NULL REFERENCES merchants (id),
    loop_id          text NOT NULL,
    member_id        text NOT NULL REFERENCES members (id),
    sku              text NOT NULL,
    cycle            integer NOT NULL,
    last_purchase_at timestamptz NOT NULL,
    predicted_at     timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    control          boolean NOT NULL,
    state            text NOT NULL DEFAULT 'scheduled'
                     CHECK (state IN ('scheduled', 'done', 'cancelled')),
    step             smallint NOT NULL DEFAULT 0,
    next_at          timestamptz,
    reordered_at     timestamptz,
    reward_state     text CHECK (reward_state IN ('granted', 'none', 'refused')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    UNIQUE (merchant_id, loop_id, member_id, sku, cycle)
);
CREATE INDEX reorder_reminders_next ON reorder_reminders (next_at) WHERE state = 'scheduled';
CREATE INDEX reorder_reminders_open ON reorder_reminders (merchant_id, member_id, sku)
    WHERE reordered_at IS NULL;
CREATE INDEX reorder_reminders_reward_due ON reorder_reminders (id)
    WHERE reward_state IS NULL AND reordered_at IS NOT NULL;
CREATE INDEX reorder_reminders_by_loop ON reorder_reminders (merchant_id, loop_id, created_at);

-- The outbox of reminder messages: one row per reminder and step, made in the transaction
-- that advances the reminder (``delivery_id`` "<reminder>/<step>" is unique: a step is made
-- once), then sent by a worker on every node that claims rows with FOR UPDATE SKIP LOCKED.
-- ``state``: 'pending' (to send at ``next_attempt_at``), 'sending' (claimed by a node until
-- ``lease_until``), 'sent', 'failed' (permanently: an SMTP 5xx, an HTTP 4xx, retries spent,
-- or a send interrupted with its outcome unknown: never sent twice), 'skipped' (no consent
-- or no address for the channel, when made or when sent). ``to_address``, ``subject`` and the
-- bodies are personal data: an erasure blanks them.
CREATE TABLE reorder_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     text NOT NULL UNIQUE,
    merchant_id     text NOT NULL REFERENCES merchants (id),
    member_id       text NOT NULL REFERENCES members (id),
    reminder_id     bigint NOT NULL REFERENCES reorder_reminders (id),
    loop_id         text NOT NULL,
    sku             text NOT NULL,
    step            smallint NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'sms')),
    to_address      text NOT NULL,
    subject         text NOT NULL,
    body_text       text NOT NULL,
    body_html       text,
    -- the incentive the message promised (LoopSpec's incentive, JSON; null: none)
    incentive       jsonb,
    state           text NOT NULL
                    CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    unsubscribed_at timestamptz
);
CREATE INDEX reorder_messages_due ON reorder_messages (next_attempt_at) WHERE state = 'pending';
CREATE INDEX reorder_messages_leased ON reorder_messages (lease_until) WHERE state = 'sending';
CREATE INDEX reorder_messages_by_member ON reorder_messages (merchant_id, member_id, created_at);
CREATE INDEX reorder_messages_by_reminder ON reorder_messages (reminder_id);

-- A click of a reminder's signed cart link (the reorder page, /reorder/{token}): one row per
-- opening, for the report's clicks. ``user_agent``: its first 200 characters.
CREATE TABLE reorder_clicks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants (id),
    reminder_id bigint NOT NULL REFERENCES reorder_reminders (id),
    member_id   text NOT NULL REFERENCES members (id),
    sku         text NOT NULL,
    user_agent  text NOT NULL DEFAULT '',
    clicked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reorder_clicks_by_reminder ON reorder_clicks (reminder_id);

-- The reward a reorder earned: one row per reminder, written in the transaction of the ledger
-- operation that grants it ("~reorder/<reminder>": unique per merchant, so granted once).
CREATE TABLE reorder_rewards (
    merchant_id text NOT NULL REFERENCES merchants (id),
    reminder_id bigint PRIMARY KEY REFERENCES reorder_reminders (id),
    member_id   text NOT NULL REFERENCES members (id),
    loop_id     text NOT NULL,
    op_id       text NOT NULL,
    grant_kind  text NOT NULL CHECK (grant_kind IN ('points', 'reward')),
    points      bigint NOT NULL DEFAULT 0,
    reward_id   text,
    code        text,
    granted_at  timestamptz NOT NULL
);
CREATE INDEX reorder_rewards_by_loop ON reorder_rewards (merchant_id, loop_id);
