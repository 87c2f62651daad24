"""The dashboard in a real browser against a real `conveyor up`: sign in, submit from the
generated form (with a validation error), watch progress live, cancel, retry, filter, bulk
actions, download, sign out. Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from conveyor.models import JobState
from tests.dashboard.conftest import Dashboard, shot, sign_in


def test_submit_from_generated_form_and_watch_progress(page: Page, dashboard: Dashboard) -> None:
    page.goto("/ui/")
    page.wait_for_url("**/ui/login**")
    shot(page, "login")
    sign_in(page, dashboard.admin_key)
    page.goto("/ui/kinds")
    shot(page, "kinds")
    page.click("a[href='/ui/kinds/demo.count']")
    to = page.locator("#f-to")
    expect(to).to_have_value("10")  # the schema's default

    # The browser refuses a value below the schema's minimum...
    to.fill("0")
    page.click("#submit-form button[type=submit]")
    assert page.url.endswith("/ui/kinds/demo.count")
    assert to.evaluate("el => el.validity.rangeUnderflow")
    # ...and the server, asked anyway, shows its error next to the field.
    page.evaluate("document.getElementById('submit-form').noValidate = true")
    page.click("#submit-form button[type=submit]")
    error = page.locator("[data-field=to] .field-error")
    expect(error).to_contain_text("minimum")
    expect(page.locator("#f-to")).to_have_value("0")
    expect(page.locator("#f-to")).to_have_attribute("aria-invalid", "true")
    shot(page, "kind-form-error")

    page.fill("#f-to", "20")
    page.fill("#f-delay", "0.1")
    page.fill("#f-_tags", "from-browser")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url("**/ui/jobs/*")
    page.evaluate("window.__sameDocument = true")
    # A function, not an expression: the page's CSP forbids eval, even for Playwright.
    page.wait_for_function(
        "() => document.getElementById('progress-bar').value === 100", timeout=30_000
    )
    expect(page.locator("#job-state")).to_have_text("succeeded")
    expect(page.locator("#log-lines li").last).to_contain_text("step 20 of 20")
    expect(page.locator("#result-json")).to_contain_text('"sum": 210')
    expect(page.locator(".timeline tbody tr").last).to_contain_text("succeeded")
    expect(page.locator("#attempts tbody tr").last).to_contain_text("succeeded")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    shot(page, "job")


def test_cancel_a_running_job(page: Page, dashboard: Dashboard) -> None:
    job_id = dashboard.submit("demo.sleep", {"seconds": 60})
    sign_in(page, dashboard.admin_key)
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("running", timeout=30_000)
    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=30_000)
    assert dashboard.wait_state(job_id, JobState.CANCELLED).state is JobState.CANCELLED


def test_retry_a_failed_job(page: Page, dashboard: Dashboard) -> None:
    job_id = dashboard.submit("demo.fail", {"message": "boom", "permanent": True})
    dashboard.wait_state(job_id, JobState.FAILED)
    sign_in(page, dashboard.admin_key)
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("#error-message")).to_have_text("boom")
    shot(page, "job-failed")
    page.click("#retry")
    expect(page.locator(".timeline")).to_contain_text("retried by hand")
    # It runs again (and fails again): a second attempt appears without a reload.
    expect(page.locator("#attempts tbody tr")).to_have_count(2)
    expect(page.locator("#job-state")).to_have_text("failed")
    # Numbered in order (the retry restarts the attempt budget: both rows said #1), each
    # with how long it ran, and the job's duration in its facts.
    rows = page.locator("#attempts tbody tr")
    expect(rows.nth(0).locator("td").first).to_have_text("1")
    expect(rows.nth(1).locator("td").first).to_have_text("2")
    expect(rows.nth(1).locator("td").nth(4)).to_contain_text("s")
    expect(page.locator("#job-duration")).to_be_visible()


def test_filter_the_table_and_bulk_cancel_then_retry(page: Page, dashboard: Dashboard) -> None:
    # Queue `held` has no worker, so these stay queued until we act.
    ids = [dashboard.submit("noop", queue="held", tags=["bulk"]) for _ in range(3)]
    other = dashboard.submit("noop", queue="held", tags=["other"])
    sign_in(page, dashboard.admin_key)
    page.goto("/ui/jobs")
    page.fill("#f-tag", "bulk")
    page.check("input[name=state][value=queued]")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**tag=bulk**")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(3)
    expect(page.locator(f"a[href='/ui/jobs/{other}']")).to_have_count(0)
    shot(page, "jobs-filtered")

    for job_id in ids[:2]:
        page.check(f"#sel-{job_id}")
    page.click("button[name=action][value=cancel]")
    expect(page.locator(".notice")).to_have_text("Cancelled 2 jobs.")
    page.uncheck("input[name=state][value=queued]")
    page.check("input[name=state][value=cancelled]")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#rows tr")).to_have_count(2)

    page.check("#select-all")
    page.click("button[name=action][value=retry]")
    expect(page.locator(".notice")).to_have_text("Retried 2 jobs.")
    store = dashboard.store()
    try:
        assert {store.get(i).state for i in ids} == {JobState.QUEUED}
    finally:
        store.close()


def test_rows_update_live(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard.admin_key)
    page.goto("/ui/jobs?tag=live")
    expect(page.locator("#rows")).to_contain_text("No jobs match")
    job_id = dashboard.submit("noop", queue="held", tags=["live"])
    expect(page.locator(f"#rows a[href='/ui/jobs/{job_id}']")).to_be_visible(timeout=10_000)


def test_download_an_output_file(page: Page, dashboard: Dashboard) -> None:
    job_id = dashboard.submit("demo.count", {"to": 5, "delay": 0, "write_file": True})
    dashboard.wait_state(job_id, JobState.SUCCEEDED)
    sign_in(page, dashboard.admin_key)
    page.goto(f"/ui/jobs/{job_id}")
    with page.expect_download() as info:
        page.click("text=numbers.txt")
    path = info.value.path()
    assert info.value.suggested_filename == "numbers.txt"
    assert path.read_text() == "1\n2\n3\n4\n5"


def test_read_only_key_sees_no_action_buttons(page: Page, dashboard: Dashboard) -> None:
    job_id = dashboard.submit("demo.fail", {"permanent": True})
    dashboard.wait_state(job_id, JobState.FAILED)
    sign_in(page, dashboard.read_key)
    page.goto(f"/ui/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator("#retry, #cancel, #delete")).to_have_count(0)
    page.goto("/ui/jobs")
    expect(page.locator("button[name=action]")).to_have_count(0)
    page.goto("/ui/kinds/demo.count")
    expect(page.locator("#submit-form")).to_have_count(0)
    page.goto("/ui/workers")
    expect(page.locator("button", has_text="Drain")).to_have_count(0)


def test_workers_page_and_sign_out(page: Page, dashboard: Dashboard) -> None:
    job_id = dashboard.submit("noop")
    dashboard.wait_state(job_id, JobState.SUCCEEDED)
    sign_in(page, dashboard.admin_key)
    # The last hour is read back from the event feed and the panel refreshes itself.
    finished = page.locator("#overview .stats li").nth(2)
    expect(finished).to_have_text(re.compile(r"^[1-9]\d* finished in the last hour"))
    expect(page.locator("#overview table.queues svg").first).to_be_visible()
    shot(page, "overview")
    page.goto("/ui/workers")
    expect(page.locator("tbody tr")).to_have_count(1)
    shot(page, "workers")
    page.click("text=Sign out")
    page.wait_for_url("**/ui/login")
    page.goto("/ui/jobs")
    page.wait_for_url("**/ui/login**")


def test_phone_width_and_dark_theme(browser: Browser, dashboard: Dashboard) -> None:
    context = browser.new_context(base_url=dashboard.url, color_scheme="dark",
                                  viewport={"width": 390, "height": 844})  # fmt: skip
    try:
        page = context.new_page()
        sign_in(page, dashboard.admin_key)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 20, 25)"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways at phone width"
        shot(page, "overview-phone-dark")
        page.goto("/ui/jobs")
        shot(page, "jobs-phone-dark")
        # The Workers page fits too: no sideways scrolling of the page or inside its table.
        page.goto("/ui/workers")
        expect(page.locator("table.workers tbody tr").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        wrap = page.locator(".table-wrap").first
        assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth"), "the table scrolls sideways"
        shot(page, "workers-phone-dark")
    finally:
        context.close()


def test_keyboard_reaches_the_login_form(page: Page, dashboard: Dashboard) -> None:
    page.goto("/ui/login")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.className") == "skip"
    page.focus("#key")
    page.keyboard.type(dashboard.admin_key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/")


def test_reading_works_with_javascript_off(browser: Browser, dashboard: Dashboard) -> None:
    job_id = dashboard.submit("demo.count", {"to": 3, "delay": 0})
    dashboard.wait_state(job_id, JobState.SUCCEEDED)
    context = browser.new_context(base_url=dashboard.url, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, dashboard.admin_key)
        expect(page.locator("table.queues")).to_be_visible()
        page.goto("/ui/jobs?kind=demo.count")
        page.click(f"a[href='/ui/jobs/{job_id}']")
        expect(page.locator("#job-state")).to_have_text("succeeded")
        expect(page.locator("#result-json")).to_contain_text('"sum": 6')
        expect(page.locator("#log-lines li")).to_have_count(3)
    finally:
        context.close()


UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !(e.tagName === 'BUTTON' && e.textContent.trim()))
  .map(e => e.outerHTML.slice(0, 80))"""


def test_every_control_has_a_label(page: Page, dashboard: Dashboard) -> None:
    page.goto("/ui/login")
    assert page.evaluate(UNLABELLED) == []
    sign_in(page, dashboard.admin_key)
    for path in ("/ui/jobs", "/ui/kinds/demo.count", "/ui/kinds/demo.fail", "/ui/workers"):
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], path
