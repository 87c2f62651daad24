"""The PostgreSQL feed never skips an event when transactions commit out of seq order."""

from __future__ import annotations

import psycopg
import pytest

from conveyor.store.postgres import PostgresStore
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres

INSERT = (
    "INSERT INTO conveyor_events (job_id, at, type, data)"
    " VALUES (%s, now(), 'log', '{}') RETURNING seq"
)


@pytest.mark.parametrize("slow_writes_first", [False, True])
def test_events_committed_out_of_seq_order_are_all_delivered(
    postgres_server: PostgresServer, slow_writes_first: bool
) -> None:
    url = postgres_server.create_schema()
    store = PostgresStore.from_url(url)
    with psycopg.connect(url) as slow, psycopg.connect(url) as fast:
        if slow_writes_first:  # slow gets the older transaction id but the higher seq
            slow.execute("INSERT INTO conveyor_records VALUES ('c', 'k', '{}', now())")
            fast.execute(INSERT, ("fast",))
            fast.commit()
            slow.execute(INSERT, ("slow",))
        else:  # slow takes the lower seq, fast commits a higher one first
            slow.execute(INSERT, ("slow",))
            fast.execute(INSERT, ("fast",))
            fast.commit()
        # The committed higher seq is held back while an older transaction is still open...
        assert store.feed() == []
        slow.commit()
    # ...and once both are committed, a reader that had stopped anywhere sees both.
    seen = [e.seq for e in store.feed()]
    assert len(seen) == 2
    assert [e.seq for e in store.feed(after=seen[0])] == seen[1:]
    assert store.feed(after=seen[-1]) == []
    store.close()


def test_feed_resumes_after_a_pruned_cursor_without_skipping(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_schema()
    store = PostgresStore.from_url(url)
    with psycopg.connect(url, autocommit=True) as conn:
        seqs = [conn.execute(INSERT, (f"j{i}",)).fetchone()[0] for i in range(3)]
        conn.execute("DELETE FROM conveyor_events WHERE seq = %s", (seqs[1],))
    assert [e.seq for e in store.feed(after=seqs[1])] == [seqs[2]]
    store.close()
