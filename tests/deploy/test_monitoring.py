"""The alert rules and the Grafana dashboard: promtool checks the rules and runs their unit
tests (each alert fires on its situation, not on a healthy neighbour), and every metric the
rules and panels query is one the real API serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from conveyor.models import NewJob
from conveyor.settings import Settings
from tests.deploy.tools import loud_skip
from tests.servers.http import serve_in_thread

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "monitoring" / "conveyor-alerts.yaml"
DASHBOARD = DEPLOY / "helm" / "conveyor" / "files" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(conveyor_[a-z_]+)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        loud_skip("promtool is not installed (Debian's prometheus package; `make install`)")
    assert found
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    tested = subprocess.run([tool, "test", "rules", "conveyor-alerts.test.yaml"],
                            cwd=RULES.parent, capture_output=True, text=True, timeout=120,
                            check=False)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    scenarios = yaml.safe_load((RULES.parent / "conveyor-alerts.test.yaml").read_text())["tests"]
    firing = {case["alertname"] for test in scenarios for case in test["alert_rule_test"]
              if case.get("exp_alerts")}  # fmt: skip
    assert firing == names, "every alert has a scenario in which it fires"


def served_metrics(tmp_path: Path) -> set[str]:
    """Metric names in a real /metrics answer (histograms with their _bucket series)."""
    from conveyor.api.app import create_app
    from conveyor.kinds.registry import import_kinds
    from conveyor.service import Service
    from conveyor.storage import open_storage
    from conveyor.store import open_store
    from conveyor.store.base import complete, fail

    store = open_store("memory://")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    service.submit_many([NewJob(kind="noop")] * 2)
    first, second = store.claim(["default"], "w", 2, 30)
    from conveyor.models import JobError

    assert first.lease and second.lease
    complete(store, first.id, first.lease.token, {})
    fail(store, second.id, second.lease.token, JobError(type="Boom", reason="error"), False)
    settings = Settings(home=tmp_path, store="memory://", imports="conveyor.kinds.demo")
    with serve_in_thread(create_app(settings, store=store)) as url:
        httpx.get(f"{url}/v1/queues")
        text = httpx.get(f"{url}/metrics").text
    store.close()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}  # fmt: skip


def test_every_queried_metric_is_served(tmp_path: Path) -> None:
    served = served_metrics(tmp_path)
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    queried = {m for e in [*exprs, *rules] for m in METRIC.findall(e)}
    assert queried - served == set(), f"queried but never served: {queried - served}"
    # The dashboard covers what an operator asks first (throughput, latency, depth and age,
    # failures by kind and reason, workers, webhook backlog, the store).
    for wanted in ("conveyor_job_transitions_total", "conveyor_job_duration_seconds_bucket",
                   "conveyor_queue_jobs", "conveyor_queue_oldest_age_seconds",
                   "conveyor_job_failures_total", "conveyor_queue_workers",
                   "conveyor_webhook_pending", "conveyor_store_up"):  # fmt: skip
        assert any(wanted in e for e in exprs), wanted
    datasources = {json.dumps(p.get("datasource")) for p in board["panels"] if p["type"] != "row"}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}
