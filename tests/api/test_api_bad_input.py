"""Well-formed but hostile JSON gets one 4xx problem everywhere, never a 500: nesting a thousand
deep (Python's recursion limit), a lone surrogate escape, integers beyond 64 bits (SQLite's
integers), NaN; and SSE resume positions beyond 64 bits."""

from __future__ import annotations

import httpx
import pytest

from conveyor.api.bodies import MAX_DEPTH, UnsupportedJson, check
from tests.api.conftest import ApiServer

DEEP = "[" * 1000 + "]" * 1000
HOSTILE = {
    "deep": DEEP,
    "lone surrogate": '"\\ud800"',
    "huge integer": "123456789012345678901234567890",
    "just past int64": "9223372036854775808",
    "NaN": "NaN",
    "1e999": "1e999",
}
# One JSON route per API: the /v1 API and each compat layer (each parses its body its own way).
ROUTES = [
    ("POST", "/v1/jobs", '{{"kind": "noop", "input": {{"v": {value}}}}}'),
    ("POST", "/v1/jobs", '{{"kind": "noop", "priority": {value}}}'),
    ("POST", "/taskqueue/v1beta2/projects/p/taskqueues/q/tasks", '{{"payloadBase64": {value}}}'),
    ("POST", "/swissai/noop/compute", '{{"s3_input_files": {value}}}'),
    ("POST", "/kge/datasets/", '{{"name": {value}}}'),
    ("POST", "/api/v1/projects", '{{"schema": {value}, "result_type": "groups"}}'),
    ("POST", "/allocation/allocate_json/", '{{"students": {value}}}'),
]


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize(("method", "path", "template"), ROUTES)
def test_hostile_json_is_a_problem_not_a_500(
    http: httpx.Client, name: str, method: str, path: str, template: str
) -> None:
    body = template.format(value=HOSTILE[name])
    for content_type in ("application/json", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = http.request(method, path, content=body, headers=headers)
        if response.status_code == 404 and "/v1/" not in path:
            continue  # that compat layer's extra is not installed here
        assert response.status_code == 422, (name, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "https://conveyor.dev/problems/unsupported-json", problem
        assert problem["instance"] == path


def test_ordinary_json_still_passes(http: httpx.Client) -> None:
    """Large legal values pass: int64 bounds, valid surrogate pairs, 100-deep nesting."""
    nested = "[" * 100 + "]" * 100
    body = (
        '{"kind": "noop", "input": {"a": -9223372036854775808, "b": 9223372036854775807,'
        f' "e": "\\ud83d\\ude00", "f": 1.5e300, "n": {nested}}}}}'
    )
    response = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["input"]["e"] == "\N{GRINNING FACE}"


def test_sse_resume_beyond_64_bits_is_refused(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop"}).json()
    huge = str(1 << 64)
    for params, headers in (({"after": huge}, {}), ({}, {"Last-Event-ID": huge})):
        response = http.get(f"/v1/jobs/{job['id']}/events", params=params, headers=headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    # A plain resume still works.
    response = http.get(f"/v1/jobs/{job['id']}/events", params={"after": 0, "follow": "false"})
    assert response.status_code == 200


def test_file_uploads_are_stored_as_sent(api: ApiServer, http: httpx.Client) -> None:
    """The guard checks JSON bodies, not files: a deep JSON file uploads unchanged."""
    response = http.put(
        "/v1/uploads/deep.json", content=DEEP, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (200, 201), response.text


def test_check_limits() -> None:
    check("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(UnsupportedJson, match="deeper"):
        check("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(UnsupportedJson, match="deeper"):
        check('{"a": ' * 2000 + "1" + "}" * 2000)
    check('"not json')  # left to the route's own error
    with pytest.raises(UnsupportedJson, match="UTF-8"):
        check(b'{"a": "\xff\xfe"}')
    check('"12345678901234567890123"')  # digits in a string are a string


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/v1/jobs/some-id", "DELETE, GET, HEAD"),
        ("PUT", "/v1/jobs", "GET, HEAD, POST"),
        ("POST", "/v1/kinds", "GET, HEAD"),
    ],
)
def test_405_names_every_method_of_the_path(
    http: httpx.Client, method: str, path: str, allow: str
) -> None:
    """GET and DELETE of one path are two routes: Allow named only the first one's."""
    response = http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == "application/problem+json"
