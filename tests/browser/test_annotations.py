"""Annotations in the portal: an editor marks a range by dragging across a chart and types the
note; it is drawn on the chart, listed as text (never as markup), and can be deleted; a
viewer sees the notes and no way to change them."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.test_portal import TIMEOUT_MS, Demo
from tests.support.cloud import CloudServer

HOSTILE = '<img src=x onerror="window.__pwned = 1">door opened'


def _open_run(page: Page, url: str, demo: Demo, role: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/")
    expect(page.locator(".dev-banner")).to_be_visible()
    page.locator("#identity-change").click()
    page.locator("#identity-form input[name=user]").fill(demo.user)
    page.locator("#load-projects").click()
    page.locator("#identity-form select[name=project_select]").select_option(label="demo_project")
    page.locator("#identity-form select[name=role]").select_option(role)
    page.locator("#identity-save").click()
    page.goto(f"{url}/runs/{demo.run}")
    chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    expect(chart).to_have_attribute("data-readings", "100")


def test_an_editor_marks_a_range_on_a_chart(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 100, ago_s=60)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    _open_run(page, portal_server.url, demo, "editor")

    box = page.locator(f".chart[data-sensor-id='{demo.sensor}'] .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    # Hovering shows the reading's time to the millisecond (readings are 100 ms apart).
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    legend_time = page.locator(f".chart[data-sensor-id='{demo.sensor}'] .u-legend .u-series").first
    expect(legend_time).to_contain_text(re.compile(r"\d\d:\d\d:\d\d\.\d\d\d"))

    page.locator("#annotate").click()
    expect(page.locator("#annotate")).to_have_text("Done annotating")
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
    page.mouse.up()
    form = page.locator("#annotate-form")
    expect(form).to_be_visible()
    form.locator("input[name=text]").fill(HOSTILE)
    form.locator("input[name=only]").check()
    form.locator("button[type=submit]").click()

    item = page.locator("#annotations li[data-annotation-id]")
    expect(item).to_have_count(1)
    expect(item.locator(".note-text")).to_have_text(HOSTILE)
    expect(item).to_contain_text("TC-1 furnace")
    expect(form).to_be_hidden()
    expect(page.locator(".chart-meta button", has_text="Reset zoom")).to_be_hidden()  # not zoomed
    expect(page.locator("#journal li[data-kind='annotation.created']")).to_have_count(1)
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(artifacts / "portal-annotation.png"), full_page=True)

    r = demo.c.get(f"/api/v1/runs/{demo.run}/annotations", headers=demo.h)
    [note] = r.json()["items"]
    assert note["text"] == HOSTILE and note["sensor_id"] == demo.sensor
    readings = demo.c.get(
        "/api/v1/telemetry", params={"sensor_id": demo.sensor, "limit": 1000}, headers=demo.h
    ).json()["items"]
    first, last = (datetime.fromisoformat(readings[i]["timestamp"]) for i in (0, -1))
    start, end = (datetime.fromisoformat(note[k]) for k in ("start", "end"))
    # The drag covered 30%..60% of the chart's width, which spans the readings.
    assert first < start < end < last
    span = (last - first).total_seconds()
    assert 0.15 * span < (end - start).total_seconds() < 0.45 * span

    item.locator("button", has_text="Delete").click()
    expect(page.locator("#annotations li[data-annotation-id]")).to_have_count(0)
    assert demo.c.get(f"/api/v1/runs/{demo.run}/annotations", headers=demo.h).json()["items"] == []


def test_a_viewer_reads_notes_and_cannot_change_them(
    portal_server: CloudServer, browser: Browser
) -> None:
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 100, ago_s=60)
    r = demo.c.get("/api/v1/telemetry", params={"sensor_id": demo.sensor}, headers=demo.h)
    at = r.json()["items"][10]["timestamp"]
    demo._post(f"/api/v1/runs/{demo.run}/annotations", {"start": at, "text": "probe re-seated"})
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _open_run(page, portal_server.url, demo, "viewer")
    item = page.locator("#annotations li[data-annotation-id]")
    expect(item).to_contain_text("probe re-seated")
    expect(item).to_contain_text("whole run")
    expect(page.locator("#annotate")).to_have_count(0)
    expect(item.locator("button")).to_have_count(0)
