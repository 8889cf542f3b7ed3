"""The portal in a real browser: demo_project's experiment, its run, capture sessions, a chart
that grows while readings are ingested, the metric chart and the live journal."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Route, expect

from tests.support.cloud import CloudServer

TIMEOUT_MS = 10_000


class Demo:
    """demo_project with one experiment, one run, two capture sessions, metrics."""

    def __init__(self, base_url: str) -> None:
        self.user = str(uuid.uuid4())
        self.c = httpx.Client(base_url=base_url, timeout=30)
        r = self.c.post(
            "/api/v1/projects", headers={"X-User-Id": self.user}, json={"name": "demo_project"}
        )
        r.raise_for_status()
        self.project = r.json()["id"]
        self.h = {"X-User-Id": self.user, "X-Project-Id": self.project, "X-Project-Role": "owner"}
        self.sensor, self.token = self._sensor("TC-1 furnace")
        self.experiment = self._post(
            "/api/v1/experiments",
            {
                "project_id": self.project,
                "name": "Furnace heat-up",
                "description": "Type K thermocouple on the furnace wall, 5 C/min ramp",
                "tags": ["thermal", "demo"],
            },
        )["id"]
        self._post(
            "/api/v1/experiments",
            {"project_id": self.project, "name": "Calibration bath", "tags": ["calibration"]},
        )
        self.run = self._post(
            f"/api/v1/experiments/{self.experiment}/runs",
            {"name": "ramp-80C", "params": {"setpoint_c": 80, "ramp_c_per_min": 5}},
        )["id"]

    def _post(self, path: str, body: Any) -> Any:
        r = self.c.post(path, headers=self.h, json=body)
        assert r.status_code in (200, 201, 202), r.text
        return r.json()

    def _sensor(self, name: str) -> tuple[str, str]:
        body = self._post(
            "/api/v1/sensors",
            {
                "project_id": self.project,
                "name": name,
                "type": "thermocouple",
                "input_unit": "mV",
                "display_unit": "C",
                "conversion_profile": {
                    "version": "v1",
                    "kind": "linear",
                    "payload": {"a": 24.4, "b": 21.0},
                },
            },
        )
        return body["sensor"]["id"], body["token"]

    def session(self, ordinal: int) -> str:
        path = f"/api/v1/runs/{self.run}/capture-sessions"
        return str(self._post(path, {"ordinal_number": ordinal, "status": "running"})["id"])

    def stop(self, session: str) -> None:
        self._post(
            f"/api/v1/runs/{self.run}/capture-sessions/{session}/stop", {"status": "succeeded"}
        )

    def ingest(
        self,
        session: str,
        start: int,
        n: int,
        *,
        ago_s: float,
        sensor: tuple[str, str] | None = None,
        step_ms: float = 100,
    ) -> None:
        """``n`` readings ``step_ms`` apart from ``ago_s`` ago, for the demo's sensor or for
        ``sensor`` (its id and token)."""
        sensor_id, token = sensor or (self.sensor, self.token)
        t0 = datetime.now(UTC) - timedelta(seconds=ago_s)
        readings = [
            {
                "timestamp": (t0 + timedelta(milliseconds=step_ms * i)).isoformat(),
                "raw_value": 0.5 + (start + i) * 0.01 + 0.05 * math.sin((start + i) / 7),
            }
            for i in range(n)
        ]
        r = self.c.post(
            "/api/v1/telemetry",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "sensor_id": sensor_id,
                "run_id": self.run,
                "capture_session_id": session,
                "readings": readings,
            },
        )
        assert r.status_code == 202, r.text

    def metrics(self, first: int, last: int) -> None:
        points = [
            {"name": "loss", "step": s, "value": 2.0 * math.exp(-s / 12) + 0.05}
            for s in range(first, last)
        ]
        self._post(f"/api/v1/runs/{self.run}/metrics", {"metrics": points})


def _set_identity(page: Page, demo: Demo) -> None:
    expect(page.locator(".dev-banner")).to_be_visible()
    page.locator("#identity-change").click()
    page.locator("#identity-form input[name=user]").fill(demo.user)
    page.locator("#load-projects").click()
    select = page.locator("#identity-form select[name=project_select]")
    expect(select.locator("option", has_text="demo_project")).to_have_count(1)
    select.select_option(label="demo_project")
    page.locator("#identity-form select[name=role]").select_option("viewer")
    page.locator("#identity-save").click()
    expect(page.locator("#identity-summary")).to_contain_text("demo_project")


def open_as_viewer(
    browser: Browser, url: str, demo: Demo, width: int = 1280, height: int = 900
) -> tuple[Page, list[str]]:
    """A page on the portal at ``url`` as the demo's viewer, and the list its uncaught errors
    go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    _set_identity(page, demo)
    return page, errors


def test_an_operator_follows_a_run_live_in_the_portal(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    demo = Demo(portal_server.url)
    first = demo.session(1)
    demo.ingest(first, 0, 300, ago_s=120)
    demo.stop(first)
    second = demo.session(2)
    demo.ingest(second, 300, 120, ago_s=40)
    demo.metrics(0, 40)

    page, errors = open_as_viewer(browser, portal_server.url, demo, width=1440, height=1000)

    # Experiments: search narrows the list to demo_project's heat-up experiment.
    rows = page.locator("tr[data-experiment-id]")
    expect(rows).to_have_count(2)
    page.locator("#exp-search").fill("heat")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Furnace heat-up")
    expect(page).to_have_title("Experiments · benchlink")
    page.screenshot(path=str(artifacts / "portal-experiments.png"))
    rows.first.click()

    # Experiment -> run (status and params shown).
    run_row = page.locator(f"tr[data-run-id='{demo.run}']")
    expect(run_row).to_contain_text("running")
    expect(run_row).to_contain_text("setpoint_c=80")
    run_row.click()

    # Run page: the running session #2 is selected, its history drawn, then it follows live.
    expect(page.locator(".session-tab")).to_have_count(2)
    expect(page).to_have_title("ramp-80C · benchlink")  # the run's name, not its status badge
    expect(page.locator(".session-tab.selected")).to_have_attribute("data-ordinal", "2")
    chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    expect(chart).to_have_attribute("data-readings", "120")
    expect(page.locator("#live-state")).to_have_text("● live")
    expect(chart.locator("canvas")).to_be_visible()

    metric = page.locator(".metric-chart[data-metric='loss']")
    expect(metric).to_have_attribute("data-points", "40")
    journal = page.locator("#journal li")
    expect(page.locator("#journal li[data-kind='telemetry.ingested']")).to_have_count(2)
    expect(page.locator("#journal li[data-kind='capture_session.started']")).to_have_count(2)
    expect(page.locator("#journal li[data-kind='metrics.logged']")).to_have_count(1)
    # Every time on the page on a 24-hour clock, as the charts' axes: the journal's, the
    # run's start, the sessions' (the browser's locale is en-US, whose default is 12-hour).
    expect(journal.first.locator("time")).to_have_text(re.compile(r"^\d{2}:\d{2}:\d{2}$"))
    expect(page.locator(".session-tab.selected")).to_contain_text(re.compile(r" \d{2}:\d{2}:"))
    expect(page.locator("body")).not_to_contain_text(re.compile(r"\d (AM|PM)\b"))
    before = journal.count()

    # Readings ingested while the page is open make the chart grow, batch by batch.
    for k in range(3):
        demo.ingest(second, 420 + 30 * k, 30, ago_s=20 - 5 * k)
        expect(chart).to_have_attribute("data-readings", str(150 + 30 * k))
    assert int(chart.get_attribute("data-points") or 0) == 210
    # ... and the journal shows the new batches without a reload: the session's readings'
    # line, among the routine lines at the top (its first batch, the metrics), keeps count
    # and moves up.
    ingested = page.locator("#journal li[data-kind='telemetry.ingested']")
    expect(ingested.first).to_have_attribute("data-batches", "4")
    expect(ingested).to_have_count(2)
    expect(ingested.first).to_contain_text("210 readings in 4 batches · TC-1 furnace")
    expect(journal.first).to_have_attribute("data-kind", "telemetry.ingested")
    assert journal.count() == before
    demo.metrics(40, 60)
    expect(metric).to_have_attribute("data-points", "60")
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "portal-run.png"), full_page=True)

    # Dragging across the chart zooms in and fetches detail for that window from the server.
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    with page.expect_response(lambda r: "/telemetry/series" in r.url and "since=" in r.url):
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
    reset = chart.get_by_role("button", name="Reset zoom")
    expect(reset).to_be_visible()
    reset.click()
    expect(reset).to_be_hidden()

    # Switching to the finished session #1 shows its own readings, not live.
    page.locator(".session-tab[data-ordinal='1']").click()
    expect(page.locator(".session-tab.selected")).to_have_attribute("data-ordinal", "1")
    expect(page.locator(".session-tab[data-ordinal='1']")).to_contain_text("succeeded")
    expect(chart).to_have_attribute("data-readings", "300")
    expect(page.locator("#live-state")).to_have_text("○ not live")
    page.screenshot(path=str(artifacts / "portal-run-session1.png"), full_page=True)

    # /tests lists the capture sessions across runs with their status.
    page.goto(portal_server.url + "/tests")
    expect(page.locator(f"tr[data-session-id='{second}']")).to_contain_text("running")
    expect(page.locator(f"tr[data-session-id='{first}']")).to_contain_text("succeeded")
    page.screenshot(path=str(artifacts / "portal-tests.png"), full_page=True)
    assert errors == []


def test_charts_show_units_as_a_lab_writes_them(
    portal_server: CloudServer, browser: Browser
) -> None:
    """A sensor registered in "degC" and a metric logged in "C" are both charted in °C."""
    demo = Demo(portal_server.url)
    # In °F from a minute ago: the readings below (stamped 10 s ago on) are v2's, in °F.
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = demo.c.patch(
        f"/api/v1/sensors/{demo.sensor}",
        headers=demo.h,
        json={"display_unit": "degF", "effective_from": since},
    )
    assert r.status_code == 200, r.text
    session = demo.session(1)
    demo.ingest(session, 0, 20, ago_s=10)
    demo._post(
        f"/api/v1/runs/{demo.run}/metrics",
        {
            "metrics": [
                {"name": "oven", "step": s, "value": 20.0 + s, "unit": "C"} for s in range(5)
            ]
        },
    )

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(portal_server.url + "/")
    _set_identity(page, demo)
    page.locator("tr[data-experiment-id]", has_text="Furnace heat-up").click()
    page.locator(f"tr[data-run-id='{demo.run}']").click()

    chart = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    expect(chart).to_have_attribute("data-unit", "°F")
    expect(chart.locator(".chart-title")).to_contain_text("(°F)")
    metric = page.locator(".metric-chart[data-metric='oven']")
    expect(metric).to_have_attribute("data-unit", "°C")
    expect(metric.locator(".chart-title")).to_contain_text("oven (°C)")


def test_each_chart_is_drawn_as_soon_as_its_history_arrives(
    portal_server: CloudServer, browser: Browser
) -> None:
    """The run page asks for every sensor's history at once and draws each on arrival: a
    slow answer for one sensor does not hold back the others, and the charts keep the
    sensors' order whatever order the answers come in."""
    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 50, ago_s=30)
    second, token = demo._sensor("TC-2 door")
    demo.ingest(session, 0, 10, ago_s=20, sensor=(second, token))

    page, errors = open_as_viewer(browser, portal_server.url, demo)
    held: list[Route] = []

    def hold(route: Route) -> None:  # answered below, once the other chart is drawn
        held.append(route)

    page.route(f"**/api/v1/telemetry/series?*sensor_id={demo.sensor}*", hold)
    page.goto(f"{portal_server.url}/runs/{demo.run}")

    slow = page.locator(f".chart[data-sensor-id='{demo.sensor}']")
    fast = page.locator(f".chart[data-sensor-id='{second}']")
    expect(fast).to_have_attribute("data-readings", "10")
    assert len(held) == 1 and slow.count() == 0  # drawn while the other is still on its way
    held[0].continue_()
    expect(slow).to_have_attribute("data-readings", "50")
    order = page.locator(".chart[data-sensor-id]").evaluate_all(
        "els => els.map(e => e.dataset.sensorId)"
    )
    listed = [s["id"] for s in demo.c.get("/api/v1/sensors", headers=demo.h).json()["items"]]
    assert order == [s for s in listed if s in (demo.sensor, second)]
    assert errors == []


def test_a_run_is_exported_from_its_page(
    portal_server: CloudServer, browser: Browser, tmp_path: Path
) -> None:
    """The run page's Export button downloads the run's readings in the chosen format, and
    counts the bytes as they arrive."""
    import pyarrow.parquet as pq

    demo = Demo(portal_server.url)
    session = demo.session(1)
    demo.ingest(session, 0, 50, ago_s=10)
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(portal_server.url + "/")
    _set_identity(page, demo)
    page.goto(f"{portal_server.url}/runs/{demo.run}")
    page.locator("#export-format").select_option("parquet")
    with page.expect_download() as info:
        page.locator("#export-run").click()
    download = info.value
    assert download.suggested_filename == f"telemetry-run-{demo.run}.parquet"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    progress = page.locator("#export-progress")
    expect(progress).to_have_attribute("data-done", "true")
    size = path.stat().st_size
    assert 1000 <= size < 100_000  # shown in kB with one decimal (the portal's fmtBytes)
    expect(progress).to_contain_text(f"{size / 1000:.1f} kB")
    expect(progress).to_contain_text("50 readings in all")
    table = pq.read_table(path)
    assert table.num_rows == 50
    listed = demo.c.get(
        "/api/v1/telemetry", headers=demo.h, params={"run_id": demo.run, "limit": 100}
    ).json()["items"]
    assert table.column("value").to_pylist() == [r["value"] for r in listed]
    assert b"ramp-80C" in table.schema.metadata[b"benchlink"]

    page.locator("#export-format").select_option("csv")
    with page.expect_download() as info:
        page.locator("#export-run").click()
    assert info.value.suggested_filename == f"telemetry-run-{demo.run}.csv"
    # A CSV's lines are counted against the readings the export announced.
    expect(progress).to_have_attribute("data-done", "true")
    expect(progress).to_contain_text("100% · 50 of 50 readings")


def test_a_server_without_a_gateway_or_dev_identity_says_how_to_try_it(
    tmp_path: Path, browser: Browser
) -> None:
    """The README's plain `serve` has no gateway in front of it and no development identity:
    the portal says so, and names the option that lets one look around on one's own machine,
    instead of only the API's "missing X-User-Id header"."""
    srv = CloudServer(f"sqlite:///{tmp_path / 'cloud.db'}", log_path=tmp_path / "server.log")
    srv.start()
    try:
        page = browser.new_page()
        page.goto(f"{srv.url}/")
        panel = page.locator(".panel.error")
        expect(panel).to_contain_text("X-User-Id", timeout=TIMEOUT_MS)
        expect(panel).to_contain_text("sign in there")
        expect(panel).to_contain_text("--dev-identity")
        page.close()
    finally:
        srv.stop()
