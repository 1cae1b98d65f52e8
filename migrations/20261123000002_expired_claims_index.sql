-- The safety net's second question, `sending` rows claimed before a cutoff, as an index range
-- whatever plan Postgres caches for it (issue 16); its first, `queued` rows pushed before a
-- cutoff, is a range of `deliveries_outstanding_idx`. A row enters this index when a worker
-- claims it, so the fan-out's inserts do not maintain it, and it holds about what workers hold.
CREATE INDEX deliveries_sending_claimed_idx ON deliveries (week, claimed_at)
    WHERE state = 'sending' AND pushed_at IS NOT NULL;
