-- conveyor PostgreSQL schema, version 3: a tag index, so a tag filter reads only the jobs that
-- carry the tag, newest first, instead of testing every row's tags.
--
-- One row per (tag, job). Statement triggers keep it in step with conveyor_jobs inside the
-- same transaction, whatever inserts or deletes jobs (enqueue, delete, prune): one set-based
-- statement per batch. Tags never change after enqueue. A b-tree on (tag, job_id) pages a tag
-- by id with no sort, which a GIN index on the jsonb tags cannot.
CREATE TABLE conveyor_job_tags (
    tag text COLLATE "C" NOT NULL,
    job_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (tag, job_id)
);

CREATE FUNCTION conveyor_job_tags_of_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO conveyor_job_tags (tag, job_id)
        SELECT DISTINCT t.tag, j.id FROM inserted j,
            jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(j.tags) = 'array' THEN j.tags ELSE '[]' END) AS t(tag)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION conveyor_job_tags_of_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM conveyor_job_tags jt USING deleted j,
        jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(j.tags) = 'array' THEN j.tags ELSE '[]' END) AS t(tag)
        WHERE jt.tag = t.tag AND jt.job_id = j.id;
    RETURN NULL;
END $$;

CREATE TRIGGER conveyor_jobs_tags_insert AFTER INSERT ON conveyor_jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_job_tags_of_inserted();

CREATE TRIGGER conveyor_jobs_tags_delete AFTER DELETE ON conveyor_jobs
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_job_tags_of_deleted();

-- The jobs a version 2 database already holds.
INSERT INTO conveyor_job_tags (tag, job_id)
    SELECT DISTINCT t.tag, j.id FROM conveyor_jobs j,
        jsonb_array_elements_text(
            CASE WHEN jsonb_typeof(j.tags) = 'array' THEN j.tags ELSE '[]' END) AS t(tag);
