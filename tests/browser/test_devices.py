"""The Devices page in a real browser: each edge's state, last heartbeat, buffer use, backlog,
clock offset, health badges and sensors (by name), from heartbeats sent to a real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.test_portal import Demo, open_as_viewer
from tests.support.cloud import CloudServer

SCREENS = Path("/work/notes/screens")


def heartbeat(
    sensors: dict[str, Any], used: int, heartbeat_s: float, offset_ms: float
) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "host": "bench-pc",
        "uptime_s": 5400.0,
        "sent_at": datetime.now(UTC).isoformat(),
        "heartbeat_s": heartbeat_s,
        "buffer": {
            "id": uuid.uuid4().hex,
            "path": "/var/lib/benchlink/buffer.db",
            "used_bytes": used,
            "max_bytes": 2_000_000_000,
        },
        "dead_letters": 0,
        "clock": {
            "offset_ms": offset_ms,
            "uncertainty_ms": 0.9,
            "rtt_ms": 1.8,
            "samples": 12,
            "max_offset_ms": 500,
            "age_s": 3.0,
        },
        "sensors": sensors,
    }


def sensor(state: str, waiting: int, oldest: float | None, dead: int = 0) -> dict[str, Any]:
    return {
        "source": "serial" if state in ("open", "closed") else "mqtt",
        "source_state": state,
        "run_id": str(uuid.uuid4()),
        "capture_session_id": str(uuid.uuid4()),
        "last_reading_ts": datetime.now(UTC).isoformat(),
        "last_reading_age_s": 0.8,
        "waiting": waiting,
        "oldest_waiting_age_s": oldest,
        "pending": waiting,
        "inflight": 0,
        "synced": 120_000,
        "dead": dead,
        "rate_per_s": 10.0,
    }


@pytest.fixture
def portal_server(tmp_path: Path) -> Iterator[CloudServer]:
    """The portal's server, with the health rules on silence evaluated every half second."""
    srv = CloudServer(
        f"sqlite:///{tmp_path / 'cloud.db'}",
        env={"BENCHLINK_DEV_IDENTITY": "1", "BENCHLINK_HEALTH_EVERY_S": "0.5"},
        log_path=tmp_path / "server.log",
    )
    srv.start()
    yield srv
    srv.stop()


def test_the_devices_page_shows_each_edge(
    portal_server: CloudServer, browser: Browser, artifacts: Path
) -> None:
    demo = Demo(portal_server.url)
    chamber_tc, _ = demo._sensor("TC-7 chamber wall")
    edges = {}
    for name in ("furnace-bench", "climate-chamber", "spare-pc"):
        r = demo.c.post("/api/v1/edges", headers=demo.h, json={"name": name})
        assert r.status_code == 201, r.text
        edges[name] = (r.json()["edge"]["id"], r.json()["token"])

    def send(name: str, body: dict[str, Any]) -> None:
        edge_id, token = edges[name]
        r = httpx.put(
            f"{portal_server.url}/api/v1/edges/{edge_id}/heartbeat",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text

    # The climate chamber's PC went quiet (a period of 0.5 s, then 2 s of silence): stale,
    # with a backlog an hour old and a clock 1.2 s off; its heartbeat had to be cut to size.
    chamber_beat = heartbeat(
        {chamber_tc: sensor("disconnected", 1_234_567, 3900.0, dead=7)},
        1_700_000_000,
        0.5,
        1200.0,
    )
    chamber_beat["truncated"] = {
        "full_bytes": 1_400_000,
        "limit_bytes": 524_288,
        "reasons_cut_to": 100,
        "sessions": 120,
        "dead": 300,
    }
    send("climate-chamber", chamber_beat)
    time.sleep(2)
    send(
        "furnace-bench",
        heartbeat(
            {
                demo.sensor: sensor("open", 12, 0.6),
                str(uuid.uuid4()): sensor("connected", 0, None),
            },
            310_000_000,
            30,
            -2.4,
        ),
    )

    page, errors = open_as_viewer(browser, portal_server.url, demo, width=1440, height=700)
    page.locator("a[data-nav=devices]").click()
    rows = page.locator("#devices-table tr[data-edge-id]")
    expect(rows).to_have_count(3)
    furnace = page.locator(f"tr[data-edge-id='{edges['furnace-bench'][0]}']")
    expect(furnace).to_have_attribute("data-state", "online")
    expect(furnace).to_contain_text("12 waiting")
    expect(furnace).to_contain_text("-2.4 ms")
    expect(furnace).to_contain_text("310 MB of 2.0 GB")
    expect(furnace.locator(".sensor-line")).to_have_count(2)
    # Sensors by name where the project has them; an id the cloud does not know stays an id.
    expect(
        furnace.locator(f".sensor-line[data-sensor-id='{demo.sensor}'] .sensor-name")
    ).to_have_text("TC-1 furnace")
    expect(furnace.locator(".sensor-name")).to_have_count(1)
    expect(furnace.locator(".badge.health")).to_have_count(0)
    chamber = page.locator(f"tr[data-edge-id='{edges['climate-chamber'][0]}']")
    expect(chamber).to_have_attribute("data-state", "stale")
    expect(chamber).to_contain_text("1,234,567 waiting")
    expect(chamber).to_contain_text("oldest 65 min")
    expect(chamber).to_contain_text("7 dead-lettered")
    expect(chamber.locator(".clock.error")).to_contain_text("+1200.0 ms")
    expect(chamber.locator(".meter.hot")).to_have_count(1)
    expect(chamber.locator(".sensor-name")).to_have_text("TC-7 chamber wall")
    cut = chamber.locator(".truncated")
    expect(cut).to_have_text("heartbeat cut to 524 kB (of 1.4 MB)")
    expect(cut).to_have_attribute(
        "title",
        "reasons cut to 100 characters; 120 older capture sessions not reported (not"
        " accounted); 300 older dead-lettered ranges not reported (counted as unaccounted)",
    )
    expect(furnace.locator(".truncated")).to_have_count(0)
    # Its health: what the heartbeat said, and its silence (by the cloud's clock).
    expect(chamber.locator(".badge.health[data-rule=buffer_full]")).to_have_text("buffer 85% full")
    expect(chamber.locator(".badge.health[data-rule=clock_offset]")).to_have_text(
        "clock 1200 ms off"
    )
    expect(chamber.locator(".badge.health[data-rule=backlog_old]")).to_have_text(
        "backlog 65 min old · TC-7 chamber wall"
    )
    expect(chamber.locator(".badge.health[data-rule=edge_silent]")).to_contain_text("silent")
    spare = page.locator(f"tr[data-edge-id='{edges['spare-pc'][0]}']")
    expect(spare).to_have_attribute("data-state", "never")
    expect(spare).to_contain_text("never reported")
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / "devices.png"), full_page=True)
    page.screenshot(path=str(artifacts / "portal-devices.png"), full_page=True)
    assert errors == []
