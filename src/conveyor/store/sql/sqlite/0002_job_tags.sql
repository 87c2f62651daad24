-- conveyor SQLite schema, version 2: a tag index, so a tag filter reads only the jobs that
-- carry the tag instead of every row's JSON.
--
-- One row per (tag, job). Triggers keep it in step with `jobs` inside the same transaction,
-- whatever writes or deletes the job (enqueue, delete, prune). Tags never change after
-- enqueue. JSON damaged outside conveyor indexes no tag rather than blocking the write.
CREATE TABLE job_tags (
    tag TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (tag, job_id)
) WITHOUT ROWID;

CREATE TRIGGER jobs_tags_insert AFTER INSERT ON jobs BEGIN
    INSERT OR IGNORE INTO job_tags (tag, job_id)
        SELECT value, NEW.id FROM json_each(CASE WHEN json_valid(NEW.tags) THEN NEW.tags END);
END;

CREATE TRIGGER jobs_tags_delete AFTER DELETE ON jobs BEGIN
    DELETE FROM job_tags WHERE job_id = OLD.id AND tag IN
        (SELECT value FROM json_each(CASE WHEN json_valid(OLD.tags) THEN OLD.tags END));
END;

-- The jobs a version 1 database already holds.
INSERT OR IGNORE INTO job_tags (tag, job_id)
    SELECT value, jobs.id FROM jobs,
        json_each(CASE WHEN json_valid(jobs.tags) THEN jobs.tags END);

-- Covered by jobs_state_queue_id (state, queue, id); EXPLAIN QUERY PLAN showed no query of
-- the store using it.
DROP INDEX IF EXISTS jobs_state;
