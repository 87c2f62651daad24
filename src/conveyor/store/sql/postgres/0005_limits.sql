-- conveyor PostgreSQL schema, version 5: flow control (#20). Concurrency and rate limits,
-- paused queues, token buckets, unique jobs and the links of a job to its schedule.
-- (Version 4 is the workflows' migration, #19.)
ALTER TABLE conveyor_jobs ADD COLUMN concurrency_key text COLLATE "C";
ALTER TABLE conveyor_jobs ADD COLUMN unique_key text COLLATE "C";
ALTER TABLE conveyor_jobs ADD COLUMN schedule_id text COLLATE "C";
ALTER TABLE conveyor_jobs ADD COLUMN schedule_tick timestamptz;

-- A key's unfinished jobs in claim order: a claim under a per-key limit reads each key's next
-- jobs, and a submit under a cancel strategy counts the key's jobs. Jobs without a key are
-- not in it, so stores that use no keys pay nothing for it.
CREATE INDEX conveyor_jobs_keyed ON conveyor_jobs
    (kind, concurrency_key, priority DESC, run_at, id)
    WHERE concurrency_key IS NOT NULL AND finished_at IS NULL;
-- Unique jobs: the unfinished job holding a unique key.
CREATE INDEX conveyor_jobs_unique ON conveyor_jobs (unique_key, created_at)
    WHERE unique_key IS NOT NULL AND finished_at IS NULL;

-- One row per limit (Limit: target = queue:<name> | kind:<name> | key:<kind>).
CREATE TABLE conveyor_limits (
    target text COLLATE "C" PRIMARY KEY,
    max_running integer,
    rate integer,
    per_s double precision NOT NULL,
    strategy text NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE conveyor_paused_queues (
    queue text COLLATE "C" PRIMARY KEY,
    paused_at timestamptz NOT NULL
);

-- Bumped by every change to limits or paused queues. A claim that believes there are none
-- checks this one row in the same statement and goes the unlimited way; others re-read the
-- limits only when it moved.
CREATE TABLE conveyor_limits_version (
    one integer PRIMARY KEY CHECK (one = 1),
    version bigint NOT NULL
);
INSERT INTO conveyor_limits_version VALUES (1, 0);

-- Token buckets: rate limits (limit:<scope>) and take_tokens' own keys.
CREATE TABLE conveyor_buckets (
    key text COLLATE "C" PRIMARY KEY,
    tokens double precision NOT NULL,
    at double precision NOT NULL
);

-- The concurrency keys that have (or recently had) unfinished jobs, per kind, and when each
-- last started one: claims under a per-key limit visit them least recently started first.
-- Written when a keyed job is submitted or retried; a claim drops a key with no unfinished
-- job left.
CREATE TABLE conveyor_limit_keys (
    kind text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    last_started double precision,
    PRIMARY KEY (kind, key)
);
CREATE INDEX conveyor_limit_keys_turn ON conveyor_limit_keys (kind, last_started NULLS FIRST, key);
