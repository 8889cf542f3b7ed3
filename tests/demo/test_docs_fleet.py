"""docs/fleet.md is executable: its bash blocks run, in order, in one shell, against a live
cloud, with a real edge daemon (MQTT sensor, no broker needed to report in)."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import httpx

from tests.demo.conftest import REPO
from tests.demo.test_docs import FENCE, run_as_new_user, without_venv
from tests.support.cloud import CloudServer

DOC = REPO / "docs" / "fleet.md"
MARK = "### docs/fleet.md block"


def test_every_bash_block_of_the_fleet_page_runs(cloud: CloudServer, tmp_path: Path) -> None:
    owner = str(uuid.uuid4())
    r = httpx.post(
        cloud.url + "/api/v1/projects", json={"name": "fleet"}, headers={"X-User-Id": owner}
    )
    assert r.status_code == 201, r.text
    # Whatever happens, the page's daemon does not outlive the test.
    script = ["set -euo pipefail", "trap 'kill ${EDGE_PID:-} 2>/dev/null || true' EXIT"]
    for i, (lang, body) in enumerate(FENCE.findall(DOC.read_text()), start=1):
        if lang == "bash":
            script += [f"echo '{MARK} {i}' >&2", body]
    env = {
        **os.environ,
        "BASE": cloud.url,
        "OWNER": owner,
        "PROJECT": r.json()["id"],
        "TMPDIR": str(tmp_path),
        "PATH": without_venv(os.environ["PATH"]),
    }
    proc = run_as_new_user(script, env, MARK, timeout=180)
    out = proc.stdout
    assert re.search(r"edge \S+, state never", out)
    assert re.search(r"state online, host \S+, buffer \d+ bytes, clock offset -?[\d.]+ ms", out)
    # The gauge counts the edge once. It reads the database, where heartbeats are written
    # behind (within a second): a scrape right after the first heartbeat may still say never.
    assert re.search(r'benchlink_edges\{state="(never|online|stale)"\} 1\.0', out), out
    assert "daemon: running for" in out and "clock: the cloud's is" in out
    assert "\nTrue\n" in out  # status --json: running
    assert re.search(r"^\d{16}$", out, re.MULTILINE)  # the server's time in microseconds
    # Health rules: the sensor's expected interval set, the gauge, the silence noticed.
    assert "\n1.0\n" in out
    assert re.search(r'^benchlink_edge_health\{rule="edge_silent"\} [01]\.0$', out, re.MULTILINE)
    assert re.search(r"^health: (.* )?edge_silent", out, re.MULTILINE), out
    assert re.search(r"^edge.health_started edge_silent furnace-bench [\d.]+ > 3", out, re.M), out
    # completeness: numbers 1-3 and 6 arrived, two readings without numbers, 4-5 missing
    assert "arrived 4, without edge accounting 2, gap 4-5" in out, out


def test_the_page_names_what_it_documents() -> None:
    text = DOC.read_text()
    for thing in (
        "/api/v1/edges",
        "rotate-token",
        "revoke-token",
        "/api/v1/time",
        "status --json",
        "[clock] correct",
        "clock_offset_ms",
        "expected_interval_s",
        "benchlink_edge_health",
        "device_skew_ms",
        "/completeness",
    ):
        assert thing in text, thing
    assert (DOC.parent / "img" / "portal-devices.png").is_file()
