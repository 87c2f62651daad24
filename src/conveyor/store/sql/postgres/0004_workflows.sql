-- conveyor PostgreSQL schema, version 4: blocked jobs (#19): dependencies and child jobs.
--
-- A blocked job counts in `pending` the jobs it still waits for; each of them holds an edge
-- (upstream -> dependent) in conveyor_job_deps until it becomes final, when the store deletes
-- its edges and counts their dependents down, queuing those that reach zero, in the same
-- transaction (see store/deps.py). Edges are read only by upstream: the primary key is the
-- only index. `depends_on` keeps the ids as submitted, for reading back and rewind.
ALTER TABLE conveyor_jobs DROP CONSTRAINT IF EXISTS conveyor_jobs_state_check;
-- Every existing row already satisfies it: no need to scan the table to prove it.
ALTER TABLE conveyor_jobs ADD CONSTRAINT conveyor_jobs_state_check CHECK (state IN
    ('blocked', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE conveyor_jobs ADD COLUMN depends_on jsonb;
ALTER TABLE conveyor_jobs ADD COLUMN workflow_id text COLLATE "C";
ALTER TABLE conveyor_jobs ADD COLUMN step text;
ALTER TABLE conveyor_jobs ADD COLUMN parent_id text COLLATE "C";
ALTER TABLE conveyor_jobs ADD COLUMN continuation json;
ALTER TABLE conveyor_jobs ADD COLUMN pending integer NOT NULL DEFAULT 0;

CREATE TABLE conveyor_job_deps (
    upstream text COLLATE "C" NOT NULL,
    dependent text COLLATE "C" NOT NULL,
    PRIMARY KEY (upstream, dependent)
);

-- A workflow's steps and a parent's children, newest first (keyset paging on id); jobs of
-- neither kind are not in these indexes.
CREATE INDEX conveyor_jobs_workflow ON conveyor_jobs (workflow_id, id) WHERE workflow_id IS NOT NULL;
CREATE INDEX conveyor_jobs_parent ON conveyor_jobs (parent_id, id) WHERE parent_id IS NOT NULL;
