"""A sensor's page in the portal: its profile versions with the time each takes effect and
who set it, a new version set there from a past time, and its calibration fits with the
newest one's residuals plotted. Screenshots go to test-artifacts/ (and /work/notes/screens/
when that folder exists)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, expect

from tests.browser.test_portal_actions import Project, _open_as, _shot
from tests.support.cloud import CloudServer

V2_FROM = "2026-01-15T08:00:00Z"
V3_FROM = "2026-02-01T09:30:00Z"


def test_the_sensor_page_shows_versions_over_time_and_calibration_fits(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    project = Project(portal_server.url)
    body = {
        "name": "furnace_tc", "type": "thermocouple", "input_unit": "mV", "display_unit": "°C",
        "conversion_profile": {"version": "v1", "kind": "thermocouple", "payload": {"type": "K"}},
    }  # fmt: skip
    sensor = project.post("/api/v1/sensors", body)["sensor"]["id"]
    r = project.c.put(
        f"/api/v1/sensors/{sensor}/conversion-profile",
        headers=project.headers(),
        json={"version": "v2", "kind": "thermocouple", "payload": {"type": "J"},
              "effective_from": V2_FROM},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    points = [
        {"value": 0.3, "reference": 0.0},
        {"value": 100.5, "reference": 100.0},
        {"value": 200.4, "reference": 200.0},
        {"value": 400.8, "reference": 400.0},
    ]
    fit = project.post(
        f"/api/v1/sensors/{sensor}/calibrations",
        {"model": "polynomial", "degree": 1, "points": points},
    )

    page = _open_as(browser, portal_server.url, project, "editor")
    page.locator("a[data-nav=sensors]").click()
    page.locator(f"tr[data-sensor-id='{sensor}'] a[data-link]").click()
    expect(page.locator("h1")).to_have_text("furnace_tc")
    versions = page.locator("#profile-versions tbody tr")
    expect(versions).to_have_count(2)
    # Newest first: v2, current, effective from its own time; v1 from the start.
    expect(versions.nth(0)).to_contain_text("v2")
    expect(versions.nth(0)).to_contain_text("current")
    expect(versions.nth(0).locator(".effective")).to_contain_text("2026-01-15T08:00:00Z")
    expect(versions.nth(1).locator(".effective")).to_contain_text("from the start")
    expect(versions.nth(0)).to_contain_text(f"you ({project.owner[:8]})")

    row = page.locator(f"tr[data-calibration-id='{fit['calibration_id']}']")
    expect(row).to_contain_text("degree 1 · 4 points")
    expect(row).to_contain_text("on v2")
    plot = page.locator("#residual-plot")
    expect(plot).to_have_attribute("data-points", "4")
    expect(plot.locator("canvas")).to_have_count(1)

    # A new version from a past time, set on this page.
    page.locator("[data-action=profile]").click()
    form = page.locator("#profile-form")
    form.locator("[name=effective_from]").fill("2025-12-01T00:00:00Z")  # before v2's
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-error-for=effective_from]")).to_contain_text("must be after")
    form.locator("[name=effective_from]").fill(V3_FROM)
    form.locator("button[type=submit]").click()
    expect(versions).to_have_count(3)
    expect(versions.nth(0)).to_contain_text("v3")
    expect(versions.nth(0).locator(".effective")).to_contain_text(V3_FROM)
    _shot(page, artifacts, "sensor-page")
    assert page.errors == []  # type: ignore[attr-defined]

    history = project.c.get(
        f"/api/v1/sensors/{sensor}/conversion-profiles", headers=project.headers()
    ).json()["items"]
    assert [(p["version"], p["effective_from"]) for p in history] == [
        ("v1", "1970-01-01T00:00:00Z"),
        ("v2", V2_FROM),
        ("v3", V3_FROM),
    ]
