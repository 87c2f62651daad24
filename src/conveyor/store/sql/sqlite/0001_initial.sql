-- conveyor SQLite schema, version 1. Times are Unix epoch seconds (REAL).
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    input TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_s REAL,
    backoff_s REAL NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT,
    webhook TEXT,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- Claims scan only waiting jobs, in claim order.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('queued', 'scheduled');
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, queue);
CREATE INDEX IF NOT EXISTS jobs_kind ON jobs (kind, id);
-- Job lists filtered by state (and queue), newest first: keyset paging on id. No index may
-- start with queue: the planner would walk it for queue_stats' GROUP BY queue.
CREATE INDEX IF NOT EXISTS jobs_state_id ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_state_queue_id ON jobs (state, queue, id);

CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);

CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    request_hash TEXT,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS kinds (
    name TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;

PRAGMA user_version = 1;
