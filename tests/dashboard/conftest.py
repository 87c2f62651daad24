"""A real `conveyor up` (API + dashboard + worker) on a free port, keys, and a headless
Chromium driven by Playwright (Debian's chromium, never a downloaded browser build)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from conveyor.api.auth import create_key
from conveyor.models import Job, JobState
from conveyor.store import Store, open_store
from tests.integration.harness import ROOT, start_server, stop, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"


@dataclass
class Dashboard:
    url: str
    home: Path
    store_url: str
    admin_key: str
    read_key: str
    process: subprocess.Popen[bytes]

    def store(self) -> Store:
        return open_store(self.store_url)

    def submit(self, kind: str, input: dict[str, Any] | None = None, **extra: Any) -> str:
        """Submit through the /v1 API with the admin key; return the job id."""
        body = {"kind": kind, "input": input or {}, **extra}
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        response = httpx.post(f"{self.url}/v1/jobs", json=body, headers=headers, timeout=30)
        assert response.status_code in (200, 201, 202), response.text
        return str(response.json()["id"])

    def wait_state(self, job_id: str, *states: JobState, timeout: float = 30) -> Job:
        store = self.store()
        try:
            return wait_for(lambda: (j := store.get(job_id)).state in states and j, timeout)
        finally:
            store.close()


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    home = tmp_path_factory.mktemp("dashboard")
    store_url = f"sqlite:///{home / 'conveyor.db'}"
    store = open_store(store_url)
    _, admin = create_key(store, "admin", ["admin"])
    _, reader = create_key(store, "viewer", ["read"])
    store.close()
    url, process = start_server("up", store_url, home, "-c", "2", log_name="up.log")
    try:
        yield Dashboard(url, home, store_url, admin, reader, process)
    finally:
        stop(process)


def login(client: httpx.Client, key: str) -> str:
    """Sign a plain HTTP client in through the login form; return its CSRF token."""
    page = client.get("/ui/login")
    token = csrf_of(page.text)
    answer = client.post("/ui/login", data={"key": key, "csrf": token, "next": "/ui/"})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/ui/jobs").text)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture
def client(dashboard: Dashboard) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dashboard.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield found
        finally:
            found.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    context = browser.new_context(base_url=dashboard.url, viewport={"width": 1280, "height": 900},
                                  accept_downloads=True)  # fmt: skip
    context.set_default_timeout(20_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def shot(page: Page, name: str, full: bool = True) -> None:
    """Save a screenshot under test-artifacts/dashboard/ (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def sign_in(page: Page, key: str) -> None:
    page.goto("/ui/")
    page.wait_for_url("**/ui/login**")
    page.fill("#key", key)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/ui/")
