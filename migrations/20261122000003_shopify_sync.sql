-- Shopify subscriber sync: durable, page-by-page runs, product buyers, and the write-back of
-- unsubscribes made in LevelUp.

-- One row per sync. A page job commits a page and advances `next_page`/`cursor` in one
-- transaction, so a crash resumes from the last committed page and no page is applied twice.
CREATE TABLE shopify_syncs (
    id             BIGSERIAL   PRIMARY KEY,
    trigger        TEXT        NOT NULL CHECK (length(trigger) BETWEEN 1 AND 64),
    status         TEXT        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    -- The page the next job fetches (1-based) and the cursor it fetches after (NULL: first page).
    next_page      INTEGER     NOT NULL DEFAULT 1 CHECK (next_page >= 1),
    cursor         TEXT,
    -- The worker fetching `next_page` right now, and until when its claim holds.
    claimed_by     TEXT,
    claimed_until  TIMESTAMPTZ,
    -- The page whose job was last pushed to the sync queue, and when: the scheduler pushes a
    -- page nobody pushed (a sync started by the API) or whose job was lost (a crashed worker).
    pushed_page    INTEGER,
    pushed_at      TIMESTAMPTZ,
    -- `pages` (cursor pagination) or `bulk` (a bulk operation's JSONL, for stores above the
    -- threshold); NULL until the first job counts the subscribed customers.
    mode           TEXT        CHECK (mode IN ('pages', 'bulk')),
    bulk_operation_id TEXT,
    -- JSONL lines of the bulk result applied (a resumed download skips them).
    lines_done     BIGINT      NOT NULL DEFAULT 0,
    pages          INTEGER     NOT NULL DEFAULT 0,
    customers_seen BIGINT      NOT NULL DEFAULT 0,
    created        BIGINT      NOT NULL DEFAULT 0,
    reactivated    BIGINT      NOT NULL DEFAULT 0,
    unsubscribed   BIGINT      NOT NULL DEFAULT 0,
    skipped        BIGINT      NOT NULL DEFAULT 0,
    throttled      BIGINT      NOT NULL DEFAULT 0,
    attempts       INTEGER     NOT NULL DEFAULT 0,
    error          TEXT,
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ
);
-- At most one sync runs at a time, whoever starts it (schedule, admin, several replicas).
CREATE UNIQUE INDEX shopify_syncs_one_running ON shopify_syncs ((true)) WHERE status = 'running';
CREATE INDEX shopify_syncs_started_idx ON shopify_syncs (started_at DESC);

-- The last sync that saw the subscriber as a subscribed customer: a completed full sync
-- unsubscribes the Shopify subscribers it did not see.
ALTER TABLE subscribers ADD COLUMN shopify_seen_sync BIGINT;

-- Buyers of the configured product, recorded from `orders/paid` webhooks.
CREATE TABLE shopify_buyers (
    customer_gid TEXT        NOT NULL,
    product_gid  TEXT        NOT NULL,
    email_lower  TEXT,
    order_gid    TEXT        NOT NULL,
    paid_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_gid, product_gid)
);

-- Unsubscribes made in LevelUp, to be written back to Shopify (customerEmailMarketingConsentUpdate).
-- Inserted in the unsubscribe's own transaction, so none is lost; the scheduler pushes a job for
-- each pending one and pushes it again if it was lost.
CREATE TABLE shopify_writebacks (
    id            BIGSERIAL   PRIMARY KEY,
    customer_gid  TEXT        NOT NULL,
    marketing_state TEXT      NOT NULL CHECK (marketing_state IN ('UNSUBSCRIBED')),
    consent_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    state         TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    pushed_at     TIMESTAMPTZ,
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at       TIMESTAMPTZ
);
CREATE INDEX shopify_writebacks_pending_idx ON shopify_writebacks (next_attempt_at) WHERE state = 'pending';
