from __future__ import annotations

from pathlib import Path

from conveyor.settings_doc import render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "settings.md"


def test_settings_reference_matches_the_code() -> None:
    assert PAGE.read_text() == render(), (
        "docs/reference/settings.md is out of date: "
        "run `python -m conveyor.settings_doc > docs/reference/settings.md`"
    )


def test_every_setting_is_explained() -> None:
    undocumented = [
        line.split("|")[1].strip() for line in render().splitlines()
        if line.startswith("| `CONVEYOR_") and line.rstrip().endswith("|  |")
    ]  # fmt: skip
    assert undocumented == []
