-- Sender reputation (issue 13). Expand-only: older binaries ignore the new columns and table.

-- When a delivery is due: the run's due time (the schedule's firing, or the trigger), or the
-- moment a late subscriber was added. A delivery not sent within LEVELUP_SEND_DEADLINE_HOURS of it
-- is skipped as `expired`. Existing rows take the migration's time (no table rewrite).
ALTER TABLE deliveries ADD COLUMN deliver_after TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE weekly_runs ADD COLUMN due_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- A paused run is neither fed nor sent; nothing of it is lost. Set by the scheduler when the
-- run's bounce or complaint rate crosses its limit, or by an operator; cleared on resume.
ALTER TABLE weekly_runs ADD COLUMN paused_at TIMESTAMPTZ;
ALTER TABLE weekly_runs ADD COLUMN paused_by TEXT;
ALTER TABLE weekly_runs ADD COLUMN pause_reason TEXT;
-- Permanent bounces and complaints SES reported for the run's messages (once per SNS message).
ALTER TABLE weekly_runs ADD COLUMN bounces BIGINT NOT NULL DEFAULT 0 CHECK (bounces >= 0);
ALTER TABLE weekly_runs ADD COLUMN complaints BIGINT NOT NULL DEFAULT 0 CHECK (complaints >= 0);
-- The counts when the run was last resumed: after an operator's resume the guard judges only
-- what is sent from then on (else it would pause again at once on the same bounces).
ALTER TABLE weekly_runs ADD COLUMN guard_sent BIGINT NOT NULL DEFAULT 0 CHECK (guard_sent >= 0);
ALTER TABLE weekly_runs ADD COLUMN guard_bounces BIGINT NOT NULL DEFAULT 0 CHECK (guard_bounces >= 0);
ALTER TABLE weekly_runs ADD COLUMN guard_complaints BIGINT NOT NULL DEFAULT 0 CHECK (guard_complaints >= 0);
ALTER TABLE weekly_runs ADD CONSTRAINT weekly_runs_pause_complete
    CHECK ((paused_at IS NULL) = (paused_by IS NULL) AND (paused_at IS NULL) = (pause_reason IS NULL));

-- An SES event names the message it is about: find its delivery (and run) by it.
CREATE INDEX deliveries_message_id_idx ON deliveries (message_id) WHERE message_id IS NOT NULL;

-- Who paused or resumed a run, when and why: the audit trail of operator and automatic actions.
CREATE TABLE run_events (
    id         BIGSERIAL   PRIMARY KEY,
    week       TEXT        NOT NULL REFERENCES weekly_runs (week),
    action     TEXT        NOT NULL CHECK (action IN ('paused', 'resumed')),
    actor      TEXT        NOT NULL,
    reason     TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX run_events_week_idx ON run_events (week, id);
