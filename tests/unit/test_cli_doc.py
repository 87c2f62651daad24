from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"
HEADER = (
    "<!-- Generated from the typer app: `typer conveyor.cli.app utils docs --name conveyor "
    '--title "CLI reference"`. Regenerate after changing commands. -->\n\n'
)


def test_cli_reference_matches_the_code() -> None:
    typer = Path(sys.executable).with_name("typer")
    generated = subprocess.run(
        [str(typer), "conveyor.cli.app", "utils", "docs", "--name", "conveyor",
         "--title", "CLI reference"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    stale = "docs/reference/cli.md is stale: run `make cli-doc`"
    assert PAGE.read_text() == HEADER + generated, stale
