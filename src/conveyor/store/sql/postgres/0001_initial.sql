-- conveyor PostgreSQL schema, version 1.
-- Times are timestamptz; JSON documents are `json` (kept byte for byte as submitted), except
-- tags (jsonb, so claims and lists can filter on them). Sorted text keys use the "C" collation
-- so ordering matches every other backend whatever the database's locale.

CREATE TABLE conveyor_jobs (
    id text COLLATE "C" PRIMARY KEY,
    kind text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    state text NOT NULL
        CHECK (state IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    input json NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL,
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout_s double precision,
    backoff_s double precision NOT NULL,
    progress json,
    result json,
    error json,
    tags jsonb NOT NULL DEFAULT '[]',
    idempotency_key text,
    webhook json,
    lease_owner text,
    lease_token text,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL
);

-- Claims scan only waiting jobs, in claim order: finished rows (millions, until pruned) are
-- not in this index at all, so claim time does not grow with history.
CREATE INDEX conveyor_jobs_ready ON conveyor_jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('queued', 'scheduled');
-- The sweeper: expired leases, and leases of one (dead) owner.
CREATE INDEX conveyor_jobs_leases ON conveyor_jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX conveyor_jobs_owner ON conveyor_jobs (lease_owner) WHERE state = 'running';
-- Promotion of due scheduled jobs.
CREATE INDEX conveyor_jobs_scheduled ON conveyor_jobs (run_at) WHERE state = 'scheduled';
-- Retention (prune) and queue statistics.
CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX conveyor_jobs_queue_state ON conveyor_jobs (queue, state);
CREATE INDEX conveyor_jobs_kind ON conveyor_jobs (kind, id);

-- Every transition, progress update and log line; `seq` is the store-wide outbox order.
-- Writers insert events under one transaction-level advisory lock, so seqs become visible in
-- increasing order and a feed reader that remembers the last seq never skips one.
CREATE TABLE conveyor_events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text COLLATE "C" NOT NULL,
    at timestamptz NOT NULL,
    type text NOT NULL,
    data json NOT NULL
);
CREATE INDEX conveyor_events_job ON conveyor_events (job_id, seq);

CREATE TABLE conveyor_idempotency (
    key text COLLATE "C" PRIMARY KEY,
    job_id text NOT NULL,
    request_hash text,
    expires_at timestamptz NOT NULL
);
CREATE INDEX conveyor_idempotency_expires ON conveyor_idempotency (expires_at);

CREATE TABLE conveyor_kinds (
    name text COLLATE "C" PRIMARY KEY,
    info json NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE conveyor_workers (
    id text COLLATE "C" PRIMARY KEY,
    info json NOT NULL,
    last_seen timestamptz NOT NULL
);

CREATE TABLE conveyor_records (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value json NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (collection, key)
);
