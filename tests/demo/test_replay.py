"""bin/demo_replay.py: the fallback that refills a run, against a live cloud."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.demo.conftest import run_script
from tests.support.cloud import Bench, CloudServer, backdate, bootstrap


def replay(bench: Bench, *args: str) -> dict[str, Any]:
    out = run_script(
        "demo_replay.py",
        "--base-url",
        bench.base_url,
        "--owner-user-id",
        bench.owner_user_id,
        "--project-id",
        bench.project_id,
        "--sensor-id",
        bench.sensor_id,
        "--token",
        bench.token,
        "--run-id",
        bench.run_id,
        *args,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def stop(bench: Bench, session_id: str) -> dict[str, Any]:
    with bench.client() as c:
        r = c.post(f"/api/v1/runs/{bench.run_id}/capture-sessions/{session_id}/stop", json={})
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


def test_generate_into_a_new_session_with_metrics(cloud: CloudServer) -> None:
    bench = bootstrap(cloud.url)
    stop(bench, bench.capture_session_id)  # the run's first session is over

    result = replay(bench, "--new-session", "--generate", "--duration", "30", "--stop")
    result2 = replay(bench, "--new-session", "--generate", "--duration", "5", "--metrics", "12")

    with bench.client() as c:
        sessions = c.get(f"/api/v1/runs/{bench.run_id}/capture-sessions").json()["items"]
        loss = c.get(f"/api/v1/runs/{bench.run_id}/metrics", params={"name": "loss"}).json()
    by_id = {s["id"]: s for s in sessions}
    assert by_id[result["capture_session_id"]]["ordinal_number"] == 2
    assert by_id[result["capture_session_id"]]["status"] == "succeeded"
    assert result["session_status"] == "succeeded"
    assert by_id[result2["capture_session_id"]]["ordinal_number"] == 3
    assert by_id[result2["capture_session_id"]]["status"] == "running"  # no --stop
    assert result["accepted"] == 300 and result2["accepted"] == 50
    assert len(bench.readings(capture_session_id=result["capture_session_id"])) == 300
    assert result2["metrics_read_back"] == 12
    steps = [p["step"] for p in loss["points"]]
    assert steps == list(range(1, 13))
    assert loss["points"][0]["value"] > loss["points"][-1]["value"]  # the loss comes down


def test_generated_data_into_an_ended_session_lands_as_late_data(cloud: CloudServer) -> None:
    bench = bootstrap(cloud.url)
    backdate(cloud.database_url, bench.capture_session_id, datetime.now(UTC) - timedelta(minutes=2))
    replay(bench, "--capture-session-id", bench.capture_session_id, "--generate")
    ended = stop(bench, bench.capture_session_id)

    result = replay(
        bench, "--capture-session-id", bench.capture_session_id, "--generate", "--duration", "600"
    )

    assert result["accepted"] > 0 and result["late"] == result["accepted"]
    late = [r for r in bench.readings() if r["late"]]
    assert len(late) == result["accepted"]
    assert all(ended["started_at"] <= r["timestamp"] for r in late)


def export_csv(bench: Bench) -> str:
    with bench.client() as c:
        r = c.get("/api/v1/telemetry/export.csv", params={"run_id": bench.run_id})
        r.raise_for_status()
        return r.text


def test_replay_an_exported_csv_into_another_run(cloud: CloudServer, tmp_path: Path) -> None:
    source = bootstrap(cloud.url)
    backdate(
        cloud.database_url, source.capture_session_id, datetime.now(UTC) - timedelta(minutes=2)
    )
    replay(source, "--capture-session-id", source.capture_session_id, "--generate")
    exported = tmp_path / "telemetry.csv"
    exported.write_text(export_csv(source))
    original = [r["raw_value"] for r in source.readings()]

    target = bootstrap(cloud.url)  # its session covers the source's: it started before
    backdate(
        cloud.database_url, target.capture_session_id, datetime.now(UTC) - timedelta(minutes=3)
    )
    result = replay(
        target, "--capture-session-id", target.capture_session_id, "--from-csv", str(exported)
    )

    assert result["accepted"] == len(original) == 600
    assert [r["raw_value"] for r in target.readings()] == original
    rows = list(csv.DictReader(io.StringIO(export_csv(target))))
    assert [float(r["raw_value"]) for r in rows] == original


def test_csv_rows_outside_an_ended_sessions_window_are_skipped(
    cloud: CloudServer, tmp_path: Path
) -> None:
    bench = bootstrap(cloud.url)
    stopped = stop(bench, bench.capture_session_id)
    inside = stopped["started_at"]
    data = tmp_path / "mixed.csv"
    data.write_text(
        f"timestamp,raw_value\n{inside},1.5\n2001-01-01T00:00:00Z,2.5\n"  # long before the session
    )
    result = replay(
        bench, "--capture-session-id", bench.capture_session_id, "--from-csv", str(data)
    )
    assert result["accepted"] == 1 and result["late"] == 1
    assert result["skipped_outside_window"] == 1


def test_a_csv_without_the_columns_is_refused(cloud: CloudServer, tmp_path: Path) -> None:
    bench = bootstrap(cloud.url)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,value\n2025-12-05T12:00:00Z,1\n")
    import subprocess
    import sys

    from tests.demo.conftest import BIN

    proc = subprocess.run(
        [
            sys.executable,
            str(BIN / "demo_replay.py"),
            "--base-url",
            bench.base_url,
            "--owner-user-id",
            bench.owner_user_id,
            "--project-id",
            bench.project_id,
            "--sensor-id",
            bench.sensor_id,
            "--token",
            bench.token,
            "--run-id",
            bench.run_id,
            "--capture-session-id",
            bench.capture_session_id,
            "--from-csv",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "missing column(s) raw_value, timestamp" in proc.stderr
    assert httpx.get(bench.base_url + "/healthz").status_code == 200


def test_a_csv_into_a_new_session_starts_the_session_with_its_first_reading(
    cloud: CloudServer, tmp_path: Path
) -> None:
    """Recorded data from two hours ago: the new session began when the recording did, so the
    cloud takes every reading (it takes none from before a session's start)."""
    bench = bootstrap(cloud.url)
    stop(bench, bench.capture_session_id)
    first = datetime.now(UTC) - timedelta(hours=2)
    data = tmp_path / "recorded.csv"
    rows = [(first + timedelta(seconds=i)).isoformat() for i in range(50)]
    data.write_text("timestamp,raw_value\n" + "".join(f"{t},{i}.5\n" for i, t in enumerate(rows)))
    result = replay(bench, "--new-session", "--from-csv", str(data), "--stop")
    assert result["accepted"] == 50 and result["skipped_outside_window"] == 0
    with bench.client() as c:
        session = c.get(
            f"/api/v1/runs/{bench.run_id}/capture-sessions/{result['capture_session_id']}"
        ).json()
    assert datetime.fromisoformat(session["started_at"]) == first


def test_a_csv_replayed_under_its_own_sensor_says_the_readings_were_duplicates(
    cloud: CloudServer, tmp_path: Path
) -> None:
    """A sensor's own export replayed under that sensor stores nothing new (one reading per
    sensor and timestamp): the summary counts them as duplicates and a note says why."""
    bench = bootstrap(cloud.url)
    backdate(cloud.database_url, bench.capture_session_id, datetime.now(UTC) - timedelta(minutes=2))
    replay(bench, "--capture-session-id", bench.capture_session_id, "--generate")
    exported = tmp_path / "telemetry.csv"
    exported.write_text(export_csv(bench))

    proc = run_script(
        "demo_replay.py",
        "--base-url",
        bench.base_url,
        "--owner-user-id",
        bench.owner_user_id,
        "--project-id",
        bench.project_id,
        "--sensor-id",
        bench.sensor_id,
        "--token",
        bench.token,
        "--run-id",
        bench.run_id,
        "--capture-session-id",
        bench.capture_session_id,
        "--from-csv",
        str(exported),
    )

    result = json.loads(proc.stdout)
    assert result["sent"] == 600 and result["accepted"] == 0 and result["duplicate"] == 600
    assert "600 of 600 readings were already stored for this sensor" in proc.stderr
    assert "replay them under another sensor" in proc.stderr
    assert len(bench.readings()) == 600  # nothing stored twice
