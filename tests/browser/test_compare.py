"""Runs compared in the portal: chosen in an experiment's list, overlaid on one chart per
sensor and metric, each run in its colour with a legend; the page's URL holds the choice (a
reload shows the same), the time axis switches between time since each run's session started
and absolute time, and zooming fetches finer data for the window. A viewer compares too, and
sees no action."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import Browser, expect

from tests.browser.lab import Lab, pixels, shot
from tests.browser.test_portal_actions import _open_as
from tests.support.cloud import CloudServer

#: The portal's first three series colours (core.js PALETTE), one per run in the URL's order.
COLOURS = ["#2563eb", "#059669", "#7c3aed"]


def _three_runs(lab: Lab) -> tuple[str, list[str]]:
    """Three furnace ramps recorded on different days, a minute each: the second read 3000
    times (downsampled on the chart, its spike kept), each with its loss by step."""
    furnace = lab.sensor("furnace", unit="C")  # a lab writes C; the portal shows °C
    lab.sensor("door", unit="C")  # no readings in these runs
    exp = lab.experiment("Furnace ramps")
    now = datetime.now(UTC).replace(microsecond=0)
    shapes = [
        (now - timedelta(days=8), 600, 0.1, lambda t: 20 + 2.0 * t),
        (now - timedelta(days=1), 3000, 0.02, lambda t: 25 + 1.6 * t + 3 * math.sin(t * 7)),
        (now - timedelta(hours=2), 400, 0.15, lambda t: 30 + 1.2 * t),
    ]
    runs = []
    for i, (start, n, step, curve) in enumerate(shapes):
        run = lab.run(exp, f"ramp-{i + 1}", {"rate_c_per_min": [120, 96, 72][i]})
        session = lab.session(run, start)
        values = [curve(k * step) for k in range(n)]
        if i == 1:
            values[1500] = 160.0  # a spike the downsampling keeps
        lab.record(furnace, run, session, start + timedelta(seconds=5), step, values)
        lab.stop(run, session)
        lab.c.patch(f"/api/v1/runs/{run}", headers=lab.headers(), json={"status": "succeeded"})
        lab.metric(run, "loss", [2.0 * math.exp(-s / (6 + 4 * i)) + 0.05 for s in range(30)])
        runs.append(run)
    return exp, runs


def test_three_runs_compared_as_a_viewer(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    lab = Lab(portal_server.url)
    exp, runs = _three_runs(lab)
    page = _open_as(browser, portal_server.url, lab, "viewer")
    page.set_viewport_size({"width": 1360, "height": 1100})
    page.goto(f"{portal_server.url}/experiments/{exp}")

    # Any role selects runs to compare (a read); only the owner gets the batch status.
    compare = page.locator("#compare-runs")
    expect(compare).to_have_attribute("aria-disabled", "true")
    for run in runs:
        page.locator(f".pick-run[data-run-id='{run}']").check()
    expect(page.locator("#batch-apply, #batch-status")).to_have_count(0)
    expect(compare).to_have_attribute("aria-disabled", "false")
    expect(page.locator("#picked")).to_have_text("3 runs selected")
    shot(page, artifacts, "compare-pick")
    compare.click()

    expect(page).to_have_url(re.compile(r"/compare\?"))
    chart = page.locator("#compare-sensor-chart")
    expect(chart).to_have_attribute("data-series", "3")
    query = parse_qs(urlparse(page.url).query)
    assert query["run"] == runs and query["sensor"] == ["furnace"] and query["axis"] == ["run"]
    expect(chart.locator(".chart-title")).to_contain_text("furnace (°C)")

    # The legend: each run in its colour, and each line drawn in it.
    rows = page.locator("#run-legend tbody tr")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.runId)") == runs
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.colour)") == COLOURS
    expect(rows.nth(1)).to_contain_text("3,000")
    expect(rows.nth(1)).to_contain_text("min–max kept")
    drawn = pixels(chart, COLOURS)
    assert all(n > 200 for n in drawn), drawn
    metric = page.locator("#compare-metric-chart")
    expect(metric).to_have_attribute("data-series", "3")
    assert all(n > 100 for n in pixels(metric, COLOURS)), pixels(metric, COLOURS)

    # Time since each run's session started: the three minutes overlay (the runs are days
    # apart); hovering says each run's value there, in °C.
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    expect(page.locator("#cursor-at")).to_contain_text(re.compile(r"furnace at \+0:\d\d\.\d\d\d"))
    for i in range(3):
        expect(rows.nth(i).locator(".value")).to_contain_text(re.compile(r"\d °C$"))
    # No button but the zoom's reset (hidden until a zoom): a viewer reads, changes nothing.
    expect(page.locator("#view button:visible")).to_have_count(0)
    expect(page.locator("#view .actions-bar, #view [data-action]")).to_have_count(0)
    shot(page, artifacts, "compare")

    # Zooming asks the server for the window, in seconds since each run's start.
    with page.expect_response(lambda r: "/runs/compare" in r.url and "t_since=" in r.url) as resp:
        page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.48, box["y"] + 40, steps=6)
        page.mouse.up()
    detail = resp.value.json()
    assert all(r["points"] for r in detail["runs"])
    assert not detail["runs"][1]["downsampled"]  # a few seconds of it: every reading
    expect(chart).to_have_attribute("data-zoomed", "true")
    expect(chart.get_by_role("button", name="Reset zoom")).to_be_visible()
    shot(page, artifacts, "compare-zoomed")
    chart.get_by_role("button", name="Reset zoom").click()
    expect(chart).to_have_attribute("data-zoomed", "false")

    # Absolute time, in the URL: a reload shows the same page.
    page.locator("#axis-time").check()
    expect(chart).to_have_attribute("data-axis", "time")
    expect(page).to_have_url(re.compile(r"axis=time"))
    page.reload()
    expect(page.locator("#axis-time")).to_be_checked()
    expect(page.locator("#compare-sensor-chart")).to_have_attribute("data-series", "3")
    shot(page, artifacts, "compare-absolute")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_sensor_without_readings_in_the_runs_says_so(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    lab = Lab(portal_server.url)
    _, runs = _three_runs(lab)
    page = _open_as(browser, portal_server.url, lab, "owner")
    page.goto(f"{portal_server.url}/compare?run={runs[0]}&run={runs[2]}&sensor=door")
    chart = page.locator("#compare-sensor-chart")
    expect(chart).to_contain_text("None of these runs has readings of door.")
    expect(chart.locator("canvas")).to_have_count(0)
    expect(page.locator("#run-legend tbody tr").first).to_contain_text("none of door")
    # Choosing another sensor draws it, and the URL follows.
    page.locator("#compare-sensor").select_option("furnace")
    expect(chart).to_have_attribute("data-series", "2")
    expect(page).to_have_url(re.compile(r"sensor=furnace"))
    assert page.errors == []  # type: ignore[attr-defined]
