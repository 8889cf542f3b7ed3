"""Reprocessing in the portal: an editor re-derives a run's readings under a sensor's second
profile version from the sensor's page and watches the job to its end; the run's chart then
switches between the versions (and overlays one on the other), the values following the
version asked for. A viewer follows jobs but is offered neither Reprocess nor Cancel."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.lab import Lab, pixels, shot
from tests.browser.test_portal_actions import _open_as
from tests.support.cloud import CloudServer

OVERLAY = "#ea580c"
N = 300


def _hover_value(page: Page, chart: Locator, row: int = 1) -> float:
    """The legend's value of series ``row`` with the cursor in the middle of the chart."""
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    cell = chart.locator(".u-legend .u-series").nth(row).locator(".u-value")
    expect(cell).not_to_have_text("—")
    return float(cell.inner_text())


def _open_sensor(page: Page, sensor: str) -> None:
    """The sensor's page, through the sensors list (the portal routes it in the browser)."""
    page.locator("a[data-nav=sensors]").click()
    page.locator(f"tr[data-sensor-id='{sensor}'] a[data-link]").click()


def test_reprocess_from_the_sensor_page_and_switch_versions_on_the_chart(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    lab = Lab(portal_server.url)
    probe = lab.sensor("oven_probe", unit="C")  # v1: value = raw
    door = lab.sensor("door_probe", unit="C")  # one version only: no switch
    run = lab.run(lab.experiment("Oven"), "soak")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    session = lab.session(run, start)
    lab.record(
        probe, run, session, start + timedelta(seconds=1), 0.2, [50 + i % 7 for i in range(N)]
    )
    lab.record(door, run, session, start + timedelta(seconds=1), 1.0, [20.0] * 60)
    lab.stop(run, session)
    # v2 doubles the raw value, effective from now: the stored readings keep v1's values.
    r = lab.c.put(
        f"/api/v1/sensors/{probe[0]}/conversion-profile", headers=lab.headers(),
        json={"version": "v2", "kind": "linear", "payload": {"a": 2.0}},
    )  # fmt: skip
    assert r.status_code == 200, r.text

    page = _open_as(browser, portal_server.url, lab, "editor")
    _open_sensor(page, probe[0])
    expect(page.locator("h1")).to_have_text("oven_probe")
    form = page.locator("#reprocess-form")
    expect(form.locator("[name=profile_version]")).to_have_value("v2")  # the current one
    form.locator("[name=run_id]").fill("not-a-run")
    form.locator("button[type=submit]").click()
    expect(page.locator("#reprocessing .error-text")).to_contain_text("run_id")
    form.locator("[name=run_id]").fill(run)
    form.locator("button[type=submit]").click()
    job = page.locator("#reprocess-jobs tbody tr")
    expect(job).to_have_count(1)
    expect(job).to_have_attribute("data-status", "succeeded", timeout=30_000)
    expect(job).to_contain_text(f"{N} / {N} (100 %)")
    expect(job).to_contain_text(f"{N} converted")
    expect(job.locator("[data-action=cancel-job]")).to_have_count(0)  # ended
    shot(page, artifacts, "reprocess-sensor-page")
    # A reload lists the sensor's jobs (the API's list, not this browser's memory).
    page.goto(f"{portal_server.url}/")
    _open_sensor(page, probe[0])
    expect(page.locator("#reprocess-jobs tbody tr")).to_have_attribute("data-status", "succeeded")

    page.goto(f"{portal_server.url}/runs/{run}")
    chart = page.locator(f".chart[data-sensor-id='{probe[0]}']")
    expect(chart).to_have_attribute("data-readings", str(N))
    expect(chart).to_have_attribute("data-versions", "v1 v2")
    expect(chart).to_have_attribute("data-version", "v2")  # the current version by default
    expect(chart.locator(".u-legend")).to_contain_text("v2 (°C)")
    as_v2 = _hover_value(page, chart)
    door_chart = page.locator(f".chart[data-sensor-id='{door[0]}']")
    expect(door_chart).to_have_attribute("data-readings", "60")
    expect(door_chart.locator(".version-switch")).to_be_hidden()
    assert door_chart.get_attribute("data-versions") is None
    pick = chart.locator("select.version-pick")
    pick.select_option("v1")
    expect(chart).to_have_attribute("data-version", "v1")
    expect(chart.locator(".u-legend")).to_contain_text("v1 (°C)")
    as_v1 = _hover_value(page, chart)
    assert 50 <= as_v1 <= 56 and as_v2 == 2 * as_v1, (as_v1, as_v2)
    pick.select_option("v2")
    expect(chart).to_have_attribute("data-version", "v2")
    assert _hover_value(page, chart) == as_v2

    # v1 overlaid on v2: a second line in its own colour, the legend naming both.
    assert pixels(chart, [OVERLAY]) == [0]
    chart.locator("select.version-overlay").select_option("v1")
    expect(chart).to_have_attribute("data-overlay", "v1")
    [orange] = pixels(chart, [OVERLAY])
    assert orange > 100, orange
    assert (_hover_value(page, chart, 1), _hover_value(page, chart, 4)) == (as_v2, as_v1)
    shot(page, artifacts, "reprocess-run-overlay")
    assert page.errors == []  # type: ignore[attr-defined]

    viewer = _open_as(browser, portal_server.url, lab, "viewer")
    _open_sensor(viewer, probe[0])
    expect(viewer.locator("#reprocessing")).to_be_visible()
    expect(viewer.locator("#reprocess-form")).to_have_count(0)
    # Another browser, another role: the editor's job is listed there too.
    expect(viewer.locator("#reprocess-jobs tbody tr")).to_have_attribute("data-status", "succeeded")
    expect(viewer.locator("[data-action=cancel-job]")).to_have_count(0)
    shot(viewer, artifacts, "reprocess-sensor-viewer")
    assert viewer.errors == []  # type: ignore[attr-defined]


def test_an_editor_follows_a_running_job_and_cancels_it(
    tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    # Chunks of 50 readings a second apart: the job runs long enough to be watched.
    srv = CloudServer(
        f"sqlite:///{tmp_path / 'cloud.db'}",
        env={"BENCHLINK_DEV_IDENTITY": "1", "BENCHLINK_REPROCESS_CHUNK": "50",
             "BENCHLINK_REPROCESS_PAUSE_S": "1"},
        log_path=tmp_path / "server.log",
    )  # fmt: skip
    srv.start()
    try:
        lab = Lab(srv.url)
        probe = lab.sensor("oven_probe", unit="C")
        run = lab.run(lab.experiment("Oven"), "soak")
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        session = lab.session(run, start)
        lab.record(probe, run, session, start, 0.2, [50.0] * 1000)
        lab.stop(run, session)
        r = lab.c.put(
            f"/api/v1/sensors/{probe[0]}/conversion-profile", headers=lab.headers(),
            json={"version": "v2", "kind": "linear", "payload": {"a": 2.0}},
        )  # fmt: skip
        assert r.status_code == 200, r.text

        page = _open_as(browser, srv.url, lab, "editor")
        _open_sensor(page, probe[0])
        page.locator("#reprocess-form button[type=submit]").click()
        job = page.locator("#reprocess-jobs tbody tr")
        expect(job).to_have_attribute("data-status", "running")
        # The progress moves while it runs (polled, not only drawn once).
        expect(job.locator(".progress-text")).to_contain_text(re.compile(r" [1-9]\d* / 1,000"))
        shot(page, artifacts, "reprocess-running")
        job.locator("[data-action=cancel-job]").click()
        expect(job).to_have_attribute("data-status", "cancelled")
        expect(job.locator("[data-action=cancel-job]")).to_have_count(0)
        done = int(job.locator(".progress-text").inner_text().split("/")[0].replace(",", ""))
        assert 0 < done < 1000, done
        job_id = job.get_attribute("data-job-id")
        answer = lab.c.get(f"/api/v1/jobs/{job_id}", headers=lab.headers()).json()
        assert (answer["status"], answer["progress"]["done"]) == ("cancelled", done)
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        srv.stop()
