-- LevelUp data model. Constraints live here, not only in code: the database is the last line of
-- defence when several API replicas and workers write at once.

-- Subscribers: the people who get the weekly challenge.
CREATE TABLE subscribers (
    id                  BIGSERIAL PRIMARY KEY,
    email               TEXT        NOT NULL CHECK (length(email) BETWEEN 3 AND 320 AND position('@' IN email) > 1),
    first_name          TEXT,
    shopify_customer_id TEXT        UNIQUE,
    status              TEXT        NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'unsubscribed', 'bounced', 'complained')),
    -- NULL until the placement questionnaire sets it.
    level               SMALLINT    CHECK (level BETWEEN 1 AND 100),
    status_changed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One subscriber per address, whatever its case.
CREATE UNIQUE INDEX subscribers_email_lower_key ON subscribers (lower(email));
-- The weekly fan-out walks active subscribers in id order (keyset pages).
CREATE INDEX subscribers_active_id_idx ON subscribers (id) WHERE status = 'active';

-- Challenges are authored per level and sent in `position` order.
CREATE TABLE challenges (
    id          BIGSERIAL PRIMARY KEY,
    level       SMALLINT    NOT NULL CHECK (level BETWEEN 1 AND 100),
    position    INTEGER     NOT NULL CHECK (position >= 0),
    title       TEXT        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body        TEXT        NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    archived    BOOLEAN     NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (level, position)
);

-- Placement questionnaire answers and the level they produced.
CREATE TABLE questionnaire_results (
    id             BIGSERIAL PRIMARY KEY,
    subscriber_id  BIGINT      NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    answers        JSONB       NOT NULL,
    score          INTEGER     NOT NULL CHECK (score >= 0),
    assigned_level SMALLINT    NOT NULL CHECK (assigned_level BETWEEN 1 AND 100),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX questionnaire_results_subscriber_idx ON questionnaire_results (subscriber_id);

-- Every level change, so a subscriber can see their history.
CREATE TABLE level_history (
    id            BIGSERIAL PRIMARY KEY,
    subscriber_id BIGINT      NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    from_level    SMALLINT    CHECK (from_level BETWEEN 1 AND 100),
    to_level      SMALLINT    NOT NULL CHECK (to_level BETWEEN 1 AND 100),
    reason        TEXT        NOT NULL CHECK (reason IN ('placement', 'promotion', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX level_history_subscriber_idx ON level_history (subscriber_id, created_at);

-- Submissions of a challenge; several attempts are allowed, a pass counts once per challenge.
CREATE TABLE submissions (
    id            BIGSERIAL PRIMARY KEY,
    subscriber_id BIGINT      NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    challenge_id  BIGINT      NOT NULL REFERENCES challenges (id),
    answer        TEXT        NOT NULL CHECK (length(answer) <= 20000),
    passed        BOOLEAN     NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX submissions_subscriber_idx ON submissions (subscriber_id, challenge_id);

-- One row per ISO week: the weekly run, its lease and its resume cursor.
CREATE TABLE weekly_runs (
    week                 TEXT        PRIMARY KEY CHECK (week ~ '^[0-9]{4}-W(0[1-9]|[1-4][0-9]|5[0-3])$'),
    status               TEXT        NOT NULL DEFAULT 'fanning_out'
                         CHECK (status IN ('fanning_out', 'sending', 'completed')),
    -- Active subscribers seen by the fan-out so far, and jobs pushed to the queue.
    total                BIGINT      NOT NULL DEFAULT 0 CHECK (total >= 0),
    enqueued             BIGINT      NOT NULL DEFAULT 0 CHECK (enqueued >= 0),
    -- Keyset cursor: the fan-out has written deliveries for every subscriber id <= this.
    resume_after_id      BIGINT      NOT NULL DEFAULT 0,
    lease_owner          TEXT,
    lease_expires_at     TIMESTAMPTZ,
    triggered_by         TEXT        NOT NULL DEFAULT 'schedule',
    started_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    fanout_finished_at   TIMESTAMPTZ,
    finished_at          TIMESTAMPTZ
);

-- The delivery ledger: at most one email per subscriber per week. Workers claim, send and record
-- here, which turns at-least-once job execution into exactly-once sends.
CREATE TABLE deliveries (
    id             BIGSERIAL PRIMARY KEY,
    subscriber_id  BIGINT      NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    week           TEXT        NOT NULL REFERENCES weekly_runs (week),
    kind           TEXT        NOT NULL CHECK (kind IN ('challenge', 'questionnaire_invite')),
    challenge_id   BIGINT      REFERENCES challenges (id),
    state          TEXT        NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'skipped')),
    attempts       INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Set when a send may have reached SES but its outcome was not recorded (see README).
    ambiguous      BOOLEAN     NOT NULL DEFAULT false,
    message_id     TEXT,
    reason         TEXT,
    -- When the fan-out last pushed this row's job to the queue (NULL: not yet).
    pushed_at      TIMESTAMPTZ,
    claimed_by     TEXT,
    claimed_at     TIMESTAMPTZ,
    sent_at        TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (subscriber_id, week),
    -- A challenge email names its challenge, unless it was skipped because the level has none.
    CHECK (kind <> 'challenge' OR challenge_id IS NOT NULL OR state = 'skipped'),
    CHECK (kind <> 'questionnaire_invite' OR challenge_id IS NULL),
    CHECK (state <> 'sent' OR message_id IS NOT NULL)
);
CREATE INDEX deliveries_week_state_idx ON deliveries (week, state);
-- The feeder's two questions: what is waiting to be pushed, and what is out in the queue.
CREATE INDEX deliveries_unpushed_idx ON deliveries (week, id) WHERE state = 'queued' AND pushed_at IS NULL;
CREATE INDEX deliveries_outstanding_idx ON deliveries (week, pushed_at) WHERE state IN ('queued', 'sending');
CREATE INDEX deliveries_subscriber_challenge_idx ON deliveries (subscriber_id, challenge_id);

-- Addresses that must never be mailed again (bounces, complaints, unsubscribes), by lower-cased address,
-- so a suppression outlives the subscriber row (e.g. after a re-import).
CREATE TABLE suppressions (
    email_lower TEXT        PRIMARY KEY CHECK (email_lower = lower(email_lower)),
    reason      TEXT        NOT NULL CHECK (reason IN ('bounce', 'complaint', 'unsubscribe', 'manual')),
    detail      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Idempotency-Key records for POSTs that create or change something.
CREATE TABLE idempotency_keys (
    client          TEXT        NOT NULL,
    key             TEXT        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'in_progress' CHECK (state IN ('in_progress', 'completed')),
    response_status SMALLINT,
    response_headers JSONB,
    response_body   BYTEA,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (client, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- Webhook deliveries already accepted (Shopify X-Shopify-Webhook-Id, SNS MessageId).
CREATE TABLE received_webhooks (
    source      TEXT        NOT NULL CHECK (source IN ('shopify', 'ses')),
    webhook_id  TEXT        NOT NULL CHECK (length(webhook_id) BETWEEN 1 AND 255),
    topic       TEXT,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, webhook_id)
);
