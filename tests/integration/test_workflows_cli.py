"""`conveyor workflows` as users run it: submit a document, follow it, list, show, cancel and
retry, on the local store; mistakes are one red line, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.harness import ROOT, start_worker, worker_env
from tests.integration.test_cli import assert_clean_error, conveyor

PIPELINE = ROOT / "examples" / "workflows" / "pipeline.json"


def test_submit_follow_list_show(tmp_path: Path) -> None:
    home = tmp_path / "home"
    submitted = conveyor(home, "workflows", "submit", str(PIPELINE), "--json")
    assert submitted.returncode == 0, submitted.stderr
    created = json.loads(submitted.stdout)
    assert created["state"] == "pending" and created["progress"]["total"] == 6

    worker = start_worker(f"sqlite:///{home / 'conveyor.db'}", home, "--burst", "-c", "2",
                          env=worker_env(home))  # fmt: skip
    shown = conveyor(home, "workflows", "show", created["id"], "--wait", "--json")
    assert worker.wait(120) == 0
    assert shown.returncode == 0, shown.stderr
    final = json.loads(shown.stdout)
    assert final["state"] == "succeeded"
    assert {s["name"]: s["state"] for s in final["steps"]}["small"] == "skipped"

    table = conveyor(home, "workflows", "show", created["id"])
    assert "demo.pipeline" in table.stdout and "upstream" not in table.stdout
    assert "6/6 steps done" in " ".join(table.stdout.split())
    listed = conveyor(home, "workflows", "list", "--state", "succeeded", "--json")
    assert created["id"] in [w["id"] for w in json.loads(listed.stdout)["workflows"]]


def test_cancel_retry_and_mistakes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    doc = tmp_path / "wf.json"
    doc.write_text(json.dumps({"steps": {
        "nap": {"kind": "demo.sleep", "input": {"seconds": 60}},
        "after": {"kind": "noop", "depends_on": ["nap"]},
    }}))  # fmt: skip
    workflow_id = conveyor(home, "workflows", "submit", str(doc)).stdout.strip()
    cancelled = conveyor(home, "workflows", "cancel", workflow_id)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr
    retried = conveyor(home, "workflows", "retry", workflow_id)
    assert retried.returncode == 0 and "pending" in retried.stdout, retried.stderr
    conveyor(home, "workflows", "cancel", workflow_id)

    doc.write_text(json.dumps({"steps": {"a": {"kind": "noop", "depends_on": ["a"]}}}))
    assert_clean_error(conveyor(home, "workflows", "submit", str(doc)), 1, "step 'a'", "itself")
    assert_clean_error(conveyor(home, "workflows", "show", "nope"), 1, "no workflow")
    doc.write_text(json.dumps({"steps": {}}))
    assert_clean_error(conveyor(home, "workflows", "submit", str(doc)), 1, "steps")
    doc.write_text("{nope")
    assert_clean_error(conveyor(home, "workflows", "submit", str(doc)), 2, "not valid JSON")
