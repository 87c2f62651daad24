"""Schemathesis over the /kge operations: whatever a client sends, never a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from conveyor.api.app import create_app
from conveyor.settings import Settings
from tests.servers.http import serve_in_thread

pytestmark = pytest.mark.timeout(240)
EXAMPLES = 15


def test_kge_operations_never_answer_5xx(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = Settings(home=home, store=f"sqlite:///{tmp_path / 'c.db'}",
                      storage=f"file://{home / 'files'}")  # fmt: skip
    with serve_in_thread(create_app(config)) as url:
        with httpx.Client(base_url=url) as http:  # something to find: a dataset with triples
            http.post("/kge/datasets/", json={"name": "d"})
            http.post("/kge/datasets/1/triples", content="a\tb\tc\n")
        loaded = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [
            op for op in (r.ok() for r in loaded.get_all_operations())
            if op.path.startswith("/kge/")
        ]  # fmt: skip
        assert len(operations) >= 14
        failures: list[str] = []
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None,
                      suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
            def check(case: Any) -> None:
                response = case.call()
                assert response.status_code < 500, (response.status_code, response.text[:300])

            try:
                check()
            except Exception as exc:  # report every operation's failure together
                failures.append(f"{operation.label}: {exc}")
        assert not failures, "\n\n".join(failures)
