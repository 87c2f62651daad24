-- conveyor SQLite schema, version 4: flow control (#20). Concurrency and rate limits, paused
-- queues, token buckets, unique jobs and the links of a job to its schedule.
-- (Version 3 is the workflows' migration, #19.)
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN schedule_id TEXT;
ALTER TABLE jobs ADD COLUMN schedule_tick REAL;

-- A key's unfinished jobs in claim order: a claim under a per-key limit reads each key's next
-- jobs, and a submit under a cancel strategy counts the key's jobs. Jobs without a key are
-- not in it, so stores that use no keys pay nothing for it.
CREATE INDEX jobs_keyed ON jobs (kind, concurrency_key, priority DESC, run_at, id)
    WHERE concurrency_key IS NOT NULL AND finished_at IS NULL;
-- Unique jobs: the unfinished job holding a unique key.
CREATE INDEX jobs_unique ON jobs (unique_key, created_at)
    WHERE unique_key IS NOT NULL AND finished_at IS NULL;

-- One row per limit (Limit: target = queue:<name> | kind:<name> | key:<kind>).
CREATE TABLE limits (
    target TEXT PRIMARY KEY,
    max_running INTEGER,
    rate INTEGER,
    per_s REAL NOT NULL,
    strategy TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE paused_queues (
    queue TEXT PRIMARY KEY,
    paused_at REAL NOT NULL
) WITHOUT ROWID;

-- Bumped by every change to limits or paused queues: a claim reads this one row and goes
-- the unlimited way while it says 0 (nothing was ever limited or paused), or re-reads the
-- limits only when it changed.
CREATE TABLE limits_version (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    version INTEGER NOT NULL
);
INSERT INTO limits_version VALUES (1, 0);

-- Token buckets: rate limits (limit:<scope>) and take_tokens' own keys.
CREATE TABLE buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;

-- The concurrency keys that have (or recently had) unfinished jobs, per kind, and when each
-- last started one: claims under a per-key limit visit them least recently started first.
-- Written when a keyed job is submitted or retried; a claim drops a key with no unfinished
-- job left.
CREATE TABLE limit_keys (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    last_started REAL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX limit_keys_turn ON limit_keys (kind, last_started);
