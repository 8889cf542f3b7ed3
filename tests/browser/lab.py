"""A project with runs recorded through the API, for the portal's chart tests: sensors in a
unit as a lab writes it, runs whose capture sessions started when asked (days apart, as runs
compared are), readings of given values; and what a chart's canvas holds."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page

from tests.browser.test_portal_actions import Project

#: Screenshots for the session's notes (looked at, not only taken).
SHOTS = Path("/work/notes/shots")


class Lab(Project):
    def sensor(self, name: str, unit: str = "C") -> tuple[str, str]:
        """A sensor whose readings are their raw values (linear, a = 1) in ``unit``."""
        body = {
            "name": name, "type": "thermocouple", "input_unit": "mV", "display_unit": unit,
            "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1.0}},
        }  # fmt: skip
        out = self.post("/api/v1/sensors", body)
        return out["sensor"]["id"], out["token"]

    def experiment(self, name: str) -> str:
        return str(self.post("/api/v1/experiments", {"name": name})["id"])

    def run(self, experiment: str, name: str, params: dict[str, Any] | None = None) -> str:
        body = {"name": name, "params": params or {}}
        return str(self.post(f"/api/v1/experiments/{experiment}/runs", body)["id"])

    def session(self, run: str, started_at: datetime, ordinal: int = 1) -> str:
        body = {
            "ordinal_number": ordinal,
            "status": "running",
            "started_at": started_at.isoformat(),
        }
        return str(self.post(f"/api/v1/runs/{run}/capture-sessions", body)["id"])

    def stop(self, run: str, session: str) -> None:
        self.post(f"/api/v1/runs/{run}/capture-sessions/{session}/stop", {"status": "succeeded"})

    def record(
        self,
        sensor: tuple[str, str],
        run: str,
        session: str,
        start: datetime,
        step_s: float,
        values: list[float],
    ) -> None:
        """``values`` read ``step_s`` apart from ``start`` on, sent as the sensor."""
        for first in range(0, len(values), 1000):
            readings = [
                {"timestamp": (start + timedelta(seconds=step_s * i)).isoformat(), "raw_value": v}
                for i, v in enumerate(values[first : first + 1000], start=first)
            ]
            body = {"sensor_id": sensor[0], "run_id": run, "capture_session_id": session,
                    "readings": readings}  # fmt: skip
            r = self.c.post(
                "/api/v1/telemetry", headers={"Authorization": f"Bearer {sensor[1]}"}, json=body
            )
            assert r.status_code == 202, r.text

    def metric(self, run: str, name: str, values: list[float]) -> None:
        points = [{"name": name, "step": s, "value": v} for s, v in enumerate(values)]
        self.post(f"/api/v1/runs/{run}/metrics", {"metrics": points})


def shot(page: Page, artifacts: Path, name: str) -> Path:
    """A full-page screenshot in test-artifacts/ and in the notes' shots/."""
    path = artifacts / f"portal-{name}.png"
    page.wait_for_timeout(300)  # the charts' last frame drawn
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / path.name)
    return path


def rgb(hex_colour: str) -> tuple[int, int, int]:
    n = int(hex_colour.lstrip("#"), 16)
    return n >> 16, (n >> 8) & 255, n & 255


_COUNT = """(canvas, [colours, near]) => {
  const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  return colours.map(([r, g, b]) => {
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
      if (Math.abs(d[i] - r) <= near && Math.abs(d[i + 1] - g) <= near
          && Math.abs(d[i + 2] - b) <= near && d[i + 3] > 200) n++;
    return n;
  });
}"""


def pixels(chart: Locator, colours: list[str], near: int = 20) -> list[int]:
    """How many pixels of the chart's canvas have each colour (within ``near`` per channel)."""
    counted: list[int] = chart.locator("canvas").evaluate(
        _COUNT, [[list(rgb(c)) for c in colours], near]
    )
    return counted
