"""``bench/run.py --quick`` works end to end: one table, valid JSON with every row.

No figure is judged here (a benchmark is not a timed test); only that each benchmark ran
against the real services and produced a number beside its ceiling.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import REPO, postgres_database, unavailable

ROWS = {
    "telemetry_ingest": True,  # name -> has a ceiling
    "alarm_ingest": True,
    "reprocess": True,
    "reprocess_ingest": True,
    "metrics_ingest": True,
    "metrics_vs_mlflow": False,  # measured only with PEERS=1
    "edge_capture": True,
    "edge_capture_rules": True,
    "sync_drain": True,
    "live_latency": False,
    "chart_query": True,
    "export": True,
    "export_parquet": True,
    "export_arrow": True,
    "fleet_heartbeats": True,
    "client_telemetry": True,
    **{
        f"chart_{f}_{size}": False
        for f in ("sensor", "sensor_session", "sensor_run")
        for size in ("small", "large")
    },
    "chart_window": False,
    "list_session": False,
    "list_run": False,
    "list_sensor": False,
    "run_page": False,
}


@pytest.fixture
def services() -> None:
    with postgres_database():
        pass
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        unavailable("Mosquitto", "the mosquitto binary is not installed")


def test_quick_run_prints_the_table_and_writes_every_row(services: None, tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    env = {k: v for k, v in os.environ.items() if k != "PEERS"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]

    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "what"
    assert "ceiling" in table[0] and "pass?" in table[0] and "peak RSS MB" in table[0]
    assert len(table) == 2 + len(ROWS)  # header, rule, one line per row

    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["peers"] is False
    rows = {r["name"]: r for r in doc["rows"]}
    assert set(rows) == set(ROWS)
    for name, has_ceiling in ROWS.items():
        row = rows[name]
        if name == "metrics_vs_mlflow":
            assert row["ceiling"] is None and "PEERS=1" in row["note"]
            continue
        assert isinstance(row["figure"], float) and math.isfinite(row["figure"]), row
        assert row["figure"] > 0 and row["passed"] in (True, False), row
        assert row["rss_mb"] and all(v > 0 for v in row["rss_mb"].values()), row
        if has_ceiling:
            assert row["ceiling"] > 0 and row["ratio"] == pytest.approx(
                row["figure"] / row["ceiling"]
            )
    assert rows["edge_capture"]["rss_mb"].keys() == {"edge"}
    assert {"edge", "cloud"} <= rows["sync_drain"]["rss_mb"].keys()
    assert "p50_ms" in rows["live_latency"]["extra"]
