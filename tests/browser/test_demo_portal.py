"""The portal as ``make demo`` opens it: a person clicks the printed URL in a fresh browser and
lands on demo_project's experiments as its owner, with no identity to type in."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.support.cloud import REPO
from tests.support.services import free_port

TIMEOUT_MS = 15_000


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    """bin/demo.py running (without the edge and MQTT, which this page does not need): the
    text it printed up to its guide."""
    port = free_port()
    argv = [sys.executable, str(REPO / "bin" / "demo.py"), "--port", str(port)]
    argv += ["--database-url", f"sqlite:///{tmp_path / 'demo.db'}"]
    argv += ["--state-dir", str(tmp_path / "state"), "--owner-file", str(tmp_path / "owner")]
    argv += ["--no-edge", "--no-mqtt", "--duration", "120"]
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Look at:") or time.monotonic() > deadline:
            break
    try:
        assert any(line.startswith("Look at:") for line in lines), "".join(lines)
        yield "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)


def test_the_demos_portal_opens_on_demo_project_as_its_owner(
    demo: str, browser: Browser, artifacts: Path
) -> None:
    out = demo
    portal = re.search(r"portal\s+(http://\S+/)", out)
    this_run = re.search(r"this run\s+(http://\S+)", out)
    seeded = re.search(r"seeded demo_project \S+ for owner (\S+)", out)
    assert portal and this_run and seeded, out
    owner = seeded[1]

    page = browser.new_page(viewport={"width": 1440, "height": 1000})  # nothing stored yet
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Nothing the pages ask for is missing: the browser's icon request too, which shows only
    # as a console error ("Failed to load resource"), not as a response of the page.
    missing: list[str] = []
    page.on("console", lambda m: missing.append(m.text) if m.type == "error" else None)
    page.goto(portal[1])

    expect(page.locator("#identity-summary")).to_contain_text("demo_project · owner")
    expect(page.locator("#identity-summary")).to_contain_text(owner[:8])
    rows = page.locator("tr[data-experiment-id]")
    expect(rows.filter(has_text="Furnace calibration")).to_have_count(1)
    expect(rows.filter(has_text="Demo ")).to_have_count(1)
    assert page.locator("#identity-dialog[open]").count() == 0
    expect(page.locator(".page-head")).to_contain_text("Experiments of demo_project")
    page.screenshot(path=str(artifacts / "demo-portal-landing.png"))

    # The printed run URL, opened directly, shows the live run (owner may act on it).
    page.goto(this_run[1])
    expect(page.locator(".session-tab")).to_have_count(1)
    expect(page.locator("#live-state")).to_have_text("● live")
    # The journal names the sensor, not the first characters of its id.
    ingested = page.locator("#journal li[data-kind='telemetry.ingested']").first
    expect(ingested).to_contain_text("temperature_raw")
    assert errors == []
    assert missing == []
