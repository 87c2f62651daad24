"""Where jobs go, from their first events (store/routes.py)."""

from __future__ import annotations

from conveyor.clock import FakeClock
from conveyor.models import JobFilter
from conveyor.store import open_store
from conveyor.store.routes import Route, Routes
from tests.conformance.helpers import spec


def test_routes_come_from_first_events_and_lookups_fill_the_rest() -> None:
    clock = FakeClock()
    store = open_store("memory://", clock=clock)
    calls: list[list[str]] = []
    list_jobs = store.list_jobs

    def counting(filter: JobFilter, cursor: str | None = None, limit: int = 50):  # type: ignore[no-untyped-def]
        calls.append(list(filter.ids or []))
        return list_jobs(filter, cursor, limit)

    older, gone = store.enqueue([spec(clock, queue="old"), spec(clock, queue="old")])
    after = store.feed()[-1].seq
    hooked, plain = store.enqueue([
        spec(clock, queue="q", webhook={"url": "https://example.org/h"}), spec(clock, queue="r"),
    ])  # fmt: skip
    store.cancel(gone.id)
    store.delete(gone.id)
    store.list_jobs = counting  # type: ignore[method-assign]
    routes = Routes(store, size=3)
    events = store.feed(after)
    ids = [older.id, gone.id, hooked.id, plain.id]
    assert routes.of(events, ids) == {
        older.id: Route("old", webhook=False),  # created before `after`: looked up
        hooked.id: Route("q", webhook=True),
        plain.id: Route("r", webhook=False),
    }
    assert calls == [[older.id, gone.id]]  # one lookup, only for the jobs it had not seen
    routes.of([], [plain.id])
    assert calls == [[older.id, gone.id]]  # remembered
    routes.of([], [gone.id, older.id])  # the deleted one is asked again; at most 3 are kept
    assert len(routes._known) == 3
