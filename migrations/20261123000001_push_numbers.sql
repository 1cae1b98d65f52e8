-- Push bookkeeping (expand-only: older binaries ignore the new columns).
-- Every push of a delivery's job is numbered, and the job's queue id is derived from the number
-- (`delivery-<id>-<n>`), so the scheduler can ask Redis whether a pushed job still exists before
-- pushing it again, and pushing the same number twice stores one job.
ALTER TABLE deliveries ADD COLUMN pushes INTEGER NOT NULL DEFAULT 0 CHECK (pushes >= 0);
-- `enqueued` counts distinct deliveries pushed at least once; `pushes` counts every push
-- (retries after a transient error or an open breaker, re-pushes of lost jobs).
ALTER TABLE weekly_runs ADD COLUMN pushes BIGINT NOT NULL DEFAULT 0 CHECK (pushes >= 0);
UPDATE weekly_runs SET pushes = enqueued;
