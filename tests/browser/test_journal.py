"""The run page while several sensors send: their batches take turns in the event journal, and
one line per batch (or per run of one sensor's) would push the run's other events out of sight;
and the session's completeness line keeps up with them."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Route, expect

from tests.browser.test_portal import Demo, open_as_viewer
from tests.support.cloud import CloudServer


def test_batches_of_sensors_taking_turns_read_as_one_line(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    demo = Demo(portal_server.url)
    session = demo.session(1)
    door = demo._sensor("TC-2 door")
    demo.ingest(session, 0, 10, ago_s=60)
    page, errors = open_as_viewer(browser, portal_server.url, demo, width=1280, height=900)
    page.goto(f"{portal_server.url}/runs/{demo.run}")
    ingested = page.locator("#journal li[data-kind='telemetry.ingested']")
    expect(ingested).to_have_count(1)

    # While the page is open: furnace, door, furnace, door; then a metric; then the door.
    for k in range(2):
        demo.ingest(session, 10 + 30 * k, 30, ago_s=50 - 10 * k)
        demo.ingest(session, 20 * k, 20, ago_s=50 - 10 * k, sensor=door)
    expect(ingested.first).to_have_attribute("data-batches", "5")
    expect(ingested).to_have_count(1)
    expect(ingested.first).to_have_attribute("data-sensors", "2")
    expect(ingested.first.locator(".detail")).to_have_text(
        "110 readings in 5 batches · TC-1 furnace 70, TC-2 door 40"
    )
    # A script logging a metric at every step: one line too, that keeps count; the two
    # routine lines take turns at the top while nothing else happens.
    metrics = page.locator("#journal li[data-kind='metrics.logged']")
    demo.metrics(0, 10)
    expect(metrics.first.locator(".detail")).to_have_text("loss · 10 points · steps 0–9")
    demo.metrics(10, 11)
    expect(metrics.first).to_have_attribute("data-batches", "2")
    expect(metrics.first.locator(".detail")).to_have_text(
        "loss · 11 points · steps 0–10 · 2 requests"
    )
    demo.ingest(session, 40, 25, ago_s=20, sensor=door)
    expect(ingested.first.locator(".detail")).to_have_text(
        "135 readings in 6 batches · TC-1 furnace 70, TC-2 door 65"
    )
    journal = page.locator("#journal li")
    kinds = "els => els.map(e => e.dataset.kind)"
    expect(journal.first).to_have_attribute("data-kind", "telemetry.ingested")
    assert journal.evaluate_all(kinds)[:2] == ["telemetry.ingested", "metrics.logged"]
    # Another event ends the routine run: what comes after it starts new lines.
    demo._post(
        f"/api/v1/runs/{demo.run}/annotations",
        {"start": "2026-01-01T00:00:00Z", "text": "door opened"},
    )
    expect(journal.first).to_have_attribute("data-kind", "annotation.created")
    demo.metrics(11, 12)
    expect(metrics).to_have_count(2)
    expect(metrics.first.locator(".detail")).to_have_text("loss · 1 point · step 11")
    expect(ingested).to_have_count(1)
    assert journal.evaluate_all(kinds)[:4] == [
        "metrics.logged",
        "annotation.created",
        "telemetry.ingested",
        "metrics.logged",
    ]
    # The session's completeness line follows the batches too, not only the page's load.
    expect(page.locator("#completeness li")).to_contain_text("135 arrived", timeout=15_000)
    page.screenshot(path=str(artifacts / "portal-journal.png"))
    assert errors == []


def test_a_long_runs_sessions_and_notes_are_in_the_journal_among_its_batches(
    portal_server: CloudServer, browser: Browser
) -> None:
    """The page loads the newest hundred events: in a run that has sent more batches than
    that since its session started, the session's start and a note are still shown."""
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo._post(
        f"/api/v1/runs/{demo.run}/annotations",
        {"start": "2026-01-01T00:00:00Z", "text": "probe fitted"},
    )
    for k in range(120):
        demo.ingest(session, k, 1, ago_s=200 - k)
    demo.metrics(0, 3)
    page, errors = open_as_viewer(browser, portal_server.url, demo, width=1280, height=900)
    written: list[str] = []
    held: list[Route] = []

    def events(route: Route) -> None:
        """The page's first two reads: the newest events answered, then another note
        written, then the others read (they see it: so does the poll after them)."""
        url = route.request.url
        if "after_id" in url:
            route.continue_()
        elif "exclude_kind" in url:
            held.append(route) if not written else route.continue_()
        else:
            response = route.fetch()
            note = {"start": "2026-01-02T00:00:00Z", "text": "written meanwhile"}
            written.append(demo._post(f"/api/v1/runs/{demo.run}/annotations", note)["id"])
            route.fulfill(response=response)
            for other in held:
                other.continue_()

    page.route("**/api/v1/runs/*/events?*", events)
    page.goto(f"{portal_server.url}/runs/{demo.run}")
    journal = page.locator("#journal li")
    expect(page.locator("#journal li[data-kind='annotation.created']").last).to_contain_text(
        "probe fitted"
    )
    meanwhile = page.locator("#journal li[data-kind='annotation.created']", has_text="meanwhile")
    expect(meanwhile).to_have_count(1)
    page.wait_for_timeout(2500)  # a poll or two later: still once
    expect(meanwhile).to_have_count(1)
    expect(page.locator("#journal li[data-kind='capture_session.started']")).to_have_count(1)
    expect(page.locator("#journal li[data-kind='run.created']")).to_have_count(1)
    # The routine events after the note read as one line each, the newest hundred counted.
    ingested = page.locator("#journal li[data-kind='telemetry.ingested']")
    expect(ingested).to_have_count(1)
    expect(ingested.first).to_have_attribute("data-batches", "99")
    kinds = journal.evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds[:4] == [
        "annotation.created",
        "metrics.logged",
        "telemetry.ingested",
        "annotation.created",
    ], kinds
    assert errors == []
