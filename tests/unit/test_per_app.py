from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from conveyor.api.deps import per_app


def test_made_once_per_service_and_again_for_a_new_one() -> None:
    app = Starlette()
    made: list[Any] = []

    def make(service: Any) -> list[Any]:
        made.append(service)
        return [service]

    app.state.service = first = object()
    one = per_app(app, "thing", make)
    assert per_app(app, "thing", make) is one
    assert app.state.thing is one and made == [first]
    app.state.service = second = object()  # the app restarted on a fresh store
    again = per_app(app, "thing", make)
    assert again is not one and again == [second] and made == [first, second]
