-- conveyor SQLite schema, version 3: blocked jobs (#19): dependencies and child jobs.
--
-- A blocked job counts in `pending` the jobs it still waits for; each of them holds an edge
-- (upstream -> dependent) in job_deps until it becomes final, when the store deletes its
-- edges and counts their dependents down, queuing those that reach zero, in the same
-- transaction (see store/deps.py). Edges are read only by upstream, so the primary key is
-- the only index. `depends_on` keeps the ids as submitted (JSON), for reading back and rewind.
ALTER TABLE jobs ADD COLUMN depends_on TEXT;
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
ALTER TABLE jobs ADD COLUMN step TEXT;
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
ALTER TABLE jobs ADD COLUMN continuation TEXT;
ALTER TABLE jobs ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;

CREATE TABLE job_deps (
    upstream TEXT NOT NULL,
    dependent TEXT NOT NULL,
    PRIMARY KEY (upstream, dependent)
) WITHOUT ROWID;

-- A workflow's steps and a parent's children, newest first (keyset paging on id); jobs of
-- neither kind are not in these indexes.
CREATE INDEX jobs_workflow ON jobs (workflow_id, id) WHERE workflow_id IS NOT NULL;
CREATE INDEX jobs_parent ON jobs (parent_id, id) WHERE parent_id IS NOT NULL;
