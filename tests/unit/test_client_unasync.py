from __future__ import annotations

from conveyor.client.unasync import TARGET, render


def test_sync_client_is_generated_from_the_async_one() -> None:
    assert TARGET.read_text() == render(), (
        "src/conveyor/client/_sync.py is out of date: run `python src/conveyor/client/unasync.py`"
    )


def test_the_sync_client_awaits_nothing() -> None:
    text = render()
    for word in ("async ", "await ", "asyncio", "AsyncIterator", "AsyncClient", "aiter_"):
        assert word not in text
