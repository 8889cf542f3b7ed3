"""Alarms on the portal's run page: one raised during a live stream appears without a reload,
an editor acknowledges it with a note; a viewer sees it and no Ack button."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.test_annotations import _open_run
from tests.browser.test_portal import TIMEOUT_MS, Demo
from tests.support.cloud import CloudServer

SCREENS = Path("/work/notes/screens")


def test_an_alarm_raised_live_is_listed_and_acknowledged(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 100, ago_s=60)
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    _open_run(page, portal_server.url, demo, "editor")
    expect(page.locator("#alarms")).to_contain_text("No alarms.")
    expect(page.locator("#live-state")).to_have_text("● live")
    # Readings sent straight to the API: nothing for completeness to account, and it says so.
    expect(page.locator("#completeness")).to_contain_text("arrived, sent without an edge")

    r = demo.c.post(
        f"/api/v1/sensors/{demo.sensor}/alarm-rules",
        json={"kind": "above", "threshold": -1000, "for_s": 0.5},
        headers=demo.h,
    )
    assert r.status_code == 201, r.text
    demo.ingest(session, 100, 20, ago_s=2)  # the live stream brings it: no reload

    raised = page.locator("#alarms li[data-state='raised']")
    expect(raised).to_have_count(1)
    expect(raised).to_contain_text("TC-1 furnace")
    expect(raised).to_contain_text("above -1000")
    page.once("dialog", lambda d: d.accept("door opened, known"))
    raised.locator("button.ack").click()
    acked = page.locator("#alarms li[data-state='acknowledged']")
    expect(acked).to_have_count(1)
    expect(acked).to_contain_text("door opened, known")
    expect(acked.locator("button.ack")).to_have_count(0)
    shot = artifacts / "portal-alarms.png"
    page.screenshot(path=str(shot), full_page=True)
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENS / "portal-alarms.png")

    [alarm] = demo.c.get(f"/api/v1/runs/{demo.run}/alarms", headers=demo.h).json()["items"]
    assert alarm["ack_note"] == "door opened, known"

    viewer = browser.new_page(viewport={"width": 1280, "height": 1000})
    demo.c.post(
        f"/api/v1/sensors/{demo.sensor}/alarm-rules",
        json={"kind": "below", "threshold": 1e9},
        headers=demo.h,
    )
    demo.ingest(session, 120, 5, ago_s=1)
    _open_run_any(viewer, portal_server.url, demo)
    expect(viewer.locator("#alarms li[data-state='raised']")).to_have_count(1)
    expect(viewer.locator("#alarms button.ack")).to_have_count(0)


def _open_run_any(page: Page, url: str, demo: Demo) -> None:
    """The run page as a viewer (its chart holds more readings than _open_run waits for)."""
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/")
    page.locator("#identity-change").click()
    page.locator("#identity-form input[name=user]").fill(demo.user)
    page.locator("#load-projects").click()
    page.locator("#identity-form select[name=project_select]").select_option(label="demo_project")
    page.locator("#identity-form select[name=role]").select_option("viewer")
    page.locator("#identity-save").click()
    page.goto(f"{url}/runs/{demo.run}")
    expect(page.locator(f".chart[data-sensor-id='{demo.sensor}']")).to_be_visible()
