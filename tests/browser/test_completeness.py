"""A run's page in a real browser shows each capture session's completeness line, from
batches with edge sequence numbers and an edge heartbeat sent to a real server."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, expect

from tests.browser.test_devices import SCREENS, heartbeat, sensor
from tests.browser.test_portal import Demo, open_as_viewer
from tests.support.cloud import CloudServer


def numbered(demo: Demo, session: str, epoch: str, first: int, n: int) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=60)
    body = {
        "sensor_id": demo.sensor,
        "run_id": demo.run,
        "capture_session_id": session,
        "readings": [
            {"timestamp": (t0 + timedelta(milliseconds=k)).isoformat(), "raw_value": 0.5}
            for k in range(first, first + n)
        ],
        "seq": {"epoch": epoch, "ranges": [[first, first + n - 1]]},
    }
    r = demo.c.post(
        "/api/v1/telemetry", headers={"Authorization": f"Bearer {demo.token}"}, json=body
    )
    assert r.status_code == 202, r.text


def test_the_run_page_shows_each_sessions_completeness(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    demo = Demo(portal_server.url)
    epoch = str(uuid.uuid4())
    first = demo.session(1)
    numbered(demo, first, epoch, 1, 1000)
    numbered(demo, first, epoch, 1001, 234)
    demo.stop(first)
    second = demo.session(2)
    numbered(demo, second, epoch, 1235, 491)
    # the edge: 1..1234 went to session 1, 1235..1760 to session 2, of which 1736..1760
    # wait in its buffer and 1731..1735 were refused by the cloud: 1726..1730 are lost
    r = demo.c.post("/api/v1/edges", headers=demo.h, json={"name": "furnace-bench"})
    assert r.status_code == 201, r.text
    edge_id, token = r.json()["edge"]["id"], r.json()["token"]
    state = sensor("open", 25, 4.0, dead=5)
    state["sequence"] = {
        "epoch": epoch,
        "captured_upto": 1760,
        "sessions": [
            {"run_id": demo.run, "capture_session_id": first, "first": 1, "last": 1234},
            {"run_id": demo.run, "capture_session_id": second, "first": 1235, "last": 1760},
        ],
        "waiting": [[1736, 1760]],
        "dead": [{"first": 1731, "last": 1735, "reason": "422: readings.0.timestamp before start"}],
    }
    body: dict[str, Any] = heartbeat({demo.sensor: state}, 1_000_000, 30, 0.5)
    r = httpx.put(
        f"{portal_server.url}/api/v1/edges/{edge_id}/heartbeat",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text

    page, errors = open_as_viewer(browser, portal_server.url, demo, width=1440, height=900)
    page.goto(f"{portal_server.url}/runs/{demo.run}")
    lines = page.locator("#completeness .completeness-line")
    expect(lines).to_have_count(2)
    one = page.locator(f"#completeness li[data-session-id='{first}']")
    expect(one).to_contain_text("1,234 captured · 1,234 arrived · 0 on their way · 0 unaccounted")
    expect(one).to_have_class("completeness-line good")
    two = page.locator(f"#completeness li[data-session-id='{second}']")
    expect(two).to_contain_text(
        "526 captured · 491 arrived · 25 on their way · 5 dead-lettered · 5 unaccounted"
    )
    expect(two).to_have_class("completeness-line bad")
    expect(two).to_have_attribute("title", re.compile("gaps \\(sequence numbers\\): 1726–1730"))
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / "run-completeness.png"), full_page=True)
    page.screenshot(path=str(artifacts / "portal-run-completeness.png"), full_page=True)
    assert errors == []
