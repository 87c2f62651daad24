"""The test guide of docs/swissai.md: its code is this file's, and it runs."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_keywords_as_a_job(tmp_path: Path) -> None:
    env = {**os.environ, "CONVEYOR_HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path),
           "CONVEYOR_IMPORTS": "examples.swissai_keywords"}  # fmt: skip

    def conveyor(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "conveyor", *args], env=env, check=True,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        return done.stdout.strip()

    (tmp_path / "in.txt").write_text("the cat and the dog and the cat")
    job_id = conveyor("submit", "examples.keywords", "--file", f"text={tmp_path / 'in.txt'}")
    conveyor("worker", "--burst", "--concurrency", "1")
    conveyor("jobs", "download", job_id, "--dest", str(tmp_path))
    assert (tmp_path / "keywords").read_text() == "word,count\ncat,2\ndog,1\n"
    assert (tmp_path / "summary").read_text() == '{"words": 8, "keywords": ["cat", "dog"]}'


def test_the_docs_show_this_code() -> None:
    """docs/swissai.md shows examples/swissai_keywords.py and the test above, verbatim."""
    docs = (ROOT / "docs" / "swissai.md").read_text()
    example = (ROOT / "examples" / "swissai_keywords.py").read_text()
    assert f"```python\n{example}```" in docs
    assert inspect.getsource(test_keywords_as_a_job) in docs
