"""Workflows in the dashboard, in a real browser: the list, the graph of steps following the
workflow live (no reload), and cancel / retry from the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.blocked import needs_blocked
from tests.dashboard.conftest import Dashboard, shot, sign_in


def submit_workflow(dashboard: Dashboard, steps: dict[str, Any], name: str) -> str:
    headers = {"Authorization": f"Bearer {dashboard.admin_key}"}
    response = httpx.post(f"{dashboard.url}/v1/workflows", json={"name": name, "steps": steps},
                          headers=headers, timeout=30)  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@needs_blocked()
def test_the_graph_follows_a_workflow_live(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    workflow_id = submit_workflow(dashboard, {
        # test.block runs until the test creates <dir>/release: the page sees it running.
        "nap": {"kind": "test.block", "input": {"dir": str(tmp_path), "name": "nap"}},
        "count": {"kind": "demo.count", "input": {"to": 3, "delay": 0}, "depends_on": ["nap"]},
        "never": {"kind": "noop", "when": {"ref": "steps.count.result.sum", "op": "gt",
                                           "value": 100}},
        "last": {"kind": "noop", "depends_on": ["count"]},
    }, "live-graph")  # fmt: skip
    sign_in(page, dashboard.admin_key)
    page.goto(f"/ui/workflows/{workflow_id}")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#node-nap")).to_have_class("node s-running", timeout=30_000)
    expect(page.locator("#node-last .node-state")).to_have_text("blocked")
    shot(page, "workflow-running")
    (tmp_path / "release").touch()
    expect(page.locator("#workflow-state")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#node-last")).to_have_class("node s-succeeded")
    expect(page.locator("#node-never .node-state")).to_have_text("skipped")
    expect(page.locator("[data-step-state=count]")).to_have_text("succeeded")
    expect(page.locator("#workflow-done")).to_have_text("4/4")
    expect(page.locator("svg.graph path.edge")).to_have_count(3)
    assert page.evaluate("window.__sameDocument") is True  # updated in place, no reload
    shot(page, "workflow")

    page.click("#node-count")
    page.wait_for_url("**/ui/jobs/*")
    expect(page.locator("#result-json")).to_contain_text('"sum": 6')

    page.goto("/ui/workflows")
    row = page.locator("#workflow-rows tr", has_text=workflow_id)
    expect(row).to_contain_text("live-graph")
    expect(row).to_contain_text("succeeded")
    shot(page, "workflows")


@needs_blocked()
def test_cancel_and_retry_from_the_page(page: Page, dashboard: Dashboard) -> None:
    workflow_id = submit_workflow(dashboard, {
        "long": {"kind": "demo.sleep", "input": {"seconds": 60}},
        "after": {"kind": "noop", "depends_on": ["long"]},
    }, "to-cancel")  # fmt: skip
    try:
        sign_in(page, dashboard.admin_key)
        page.goto(f"/ui/workflows/{workflow_id}")
        expect(page.locator("#node-long")).to_have_class("node s-running", timeout=30_000)
        page.click("#cancel")
        expect(page.locator("#workflow-state")).to_have_text("cancelled", timeout=30_000)
        expect(page.locator("#node-after .node-state")).to_have_text("cancelled")
        page.click("#retry")
        expect(page.locator("#node-long")).to_have_class("node s-running", timeout=30_000)
    finally:  # never leave a worker of the shared server busy for a minute
        headers = {"Authorization": f"Bearer {dashboard.admin_key}"}
        httpx.post(f"{dashboard.url}/v1/workflows/{workflow_id}/cancel", headers=headers)
