"""Downloads are labelled with their type when it is inert, else octet-stream."""

from __future__ import annotations

import pytest

from conveyor.api.routes.files import download_type


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Binary Cards (a4).pdf", "application/pdf"),
        ("result.json", "application/json"),
        ("counts.csv", "text/csv"),
        ("photo.JPG", "image/jpeg"),
        ("page.html", "application/octet-stream"),
        ("drawing.svg", "application/octet-stream"),
        ("script.js", "application/octet-stream"),
        ("data", "application/octet-stream"),
    ],
)
def test_download_type(name: str, expected: str) -> None:
    assert download_type(name) == expected
