-- conveyor PostgreSQL schema, version 2: the event feed in commit order without a global lock.
--
-- Concurrent transactions may commit a lower event seq after a higher one. Each event now
-- records the id of the transaction that wrote it; the feed reads in (xid, seq) order and only
-- transactions older than the oldest one still running, so a reader that remembers its
-- position never skips an event (see PostgresStore.feed). Needs PostgreSQL 13 or newer.
ALTER TABLE conveyor_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX conveyor_events_commit_order ON conveyor_events (xid, seq);
