-- Test sends (issue #13): a challenge's email rendered as a run would render it and sent to an
-- address the operator gives, outside any run. Never in the deliveries ledger: this table is the
-- test sends' own record (what the operator follows) and the memory of the per-operator limit.
CREATE TABLE test_sends (
    id            BIGSERIAL   PRIMARY KEY,
    -- Who asked (the verified credential; today the admin key, `admin`).
    operator      TEXT        NOT NULL CHECK (length(operator) BETWEEN 1 AND 64),
    challenge_id  BIGINT      NOT NULL REFERENCES challenges (id),
    -- Whose name and level the email shows (NULL: a sample subscriber). Deleting the subscriber
    -- (Shopify redaction) deletes their test sends.
    subscriber_id BIGINT      REFERENCES subscribers (id) ON DELETE CASCADE,
    to_address    TEXT        NOT NULL CHECK (length(to_address) BETWEEN 3 AND 320),
    state         TEXT        NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sending', 'sent', 'failed')),
    -- When the scheduler last pushed its job; a queued row pushed long ago is pushed again.
    pushed_at     TIMESTAMPTZ,
    claimed_by    TEXT,
    claimed_at    TIMESTAMPTZ,
    message_id    TEXT,
    error         TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ
);
-- The rate limit counts an operator's test sends of the last minute.
CREATE INDEX test_sends_operator_created_idx ON test_sends (operator, created_at);
-- The scheduler looks for unfinished ones every tick.
CREATE INDEX test_sends_unfinished_idx ON test_sends (id) WHERE state IN ('queued', 'sending');
