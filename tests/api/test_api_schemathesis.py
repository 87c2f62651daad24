"""Schemathesis over the served OpenAPI, every API conveyor serves (/v1, the compat layers,
the deliveries log): no 500s, every status code, content type, header and body matches the
document, unsupported methods get 405 with the right `Allow`, and schema-invalid requests are
refused.

Bounded: a few examples per operation (about a thousand requests in all, under two minutes).
The SSE endpoint runs with `follow=false` (a stream that stays open until its job ends has its
own tests); the dashboard's HTML pages are left out (tests/dashboard).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.api.conftest import ApiServer, running_api

#: The /v1 API gets more examples than each compat route (those have workload tests of their
#: own against the seed systems' real clients).
EXAMPLES = {"v1": 12, "compat": 5}
# Schema-valid requests the service rightly refuses on meaning, not shape (an Idempotency-Key
# header that contradicts the body's key, a job in the wrong state, an upload id that does not
# exist) answer 4xx problem+json; that check would call those failures.
SEMANTIC = [schemathesis.checks.positive_data_acceptance]
V1_TAGS = {"jobs", "files", "catalog", "lease", "health", "queues", "limits", "schedules"}


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


def _follow_false(case: Any) -> None:
    if case.operation.path.endswith("/events"):
        case.query = {**(case.query or {}), "follow": "false"}


def test_api_conforms(fuzzed_api: ApiServer) -> None:
    # Each operation gets its own Hypothesis run; `from_fixture` does not work on pytest 9.
    loaded = schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json")
    operations = [
        op for op in (r.ok() for r in loaded.get_all_operations())
        if not op.path.startswith("/ui")
    ]  # fmt: skip
    assert len(operations) > 90
    failures = []
    for operation in operations:
        v1 = bool(set(operation.definition.raw.get("tags", ())) & V1_TAGS)

        # Valid requests (must be answered as documented) and invalid ones (must be refused).
        cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in GenerationMode))

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES["v1" if v1 else "compat"] * 2,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            _follow_false(case)
            case.call_and_validate(excluded_checks=SEMANTIC, timeout=30)

        try:
            check()
        except BaseException as exc:  # every operation's failure (groups too), then all at once
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {exc}")
    assert not failures, f"{len(failures)} operations fail:\n\n" + "\n\n".join(failures)
