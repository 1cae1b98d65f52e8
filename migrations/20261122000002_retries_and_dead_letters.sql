-- Retries are scheduled in the ledger: a transient failure puts the row back to `queued` with
-- the time of its next attempt, and the scheduler pushes it again when it is due.
ALTER TABLE deliveries ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now();
DROP INDEX deliveries_unpushed_idx;
CREATE INDEX deliveries_due_idx ON deliveries (week, next_attempt_at, id) WHERE state = 'queued' AND pushed_at IS NULL;

-- Jobs that exhausted their attempt budget, with their last error, until replayed.
CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    queue       TEXT        NOT NULL CHECK (queue IN ('email', 'shopify-sync')),
    job         JSONB       NOT NULL,
    delivery_id BIGINT      REFERENCES deliveries (id) ON DELETE CASCADE,
    attempts    INTEGER     NOT NULL CHECK (attempts >= 0),
    last_error  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at TIMESTAMPTZ
);
CREATE INDEX dead_letters_open_idx ON dead_letters (created_at) WHERE replayed_at IS NULL;
-- At most one open dead letter per delivery.
CREATE UNIQUE INDEX dead_letters_open_delivery_key ON dead_letters (delivery_id) WHERE replayed_at IS NULL;
