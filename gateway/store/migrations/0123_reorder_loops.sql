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
