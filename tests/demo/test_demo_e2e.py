"""``bin/demo.py`` (what ``make demo`` runs) end to end, checked in the database it filled.

The demo starts the real cloud, the simulator on a pty, the edge daemon and (when the
machine's Mosquitto answers on 1883) an MQTT device; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.settings import normalize_database_url
from hardware.thermocouple import compensated_temperature_c
from tests.demo.conftest import BIN, REPO
from tests.support.services import free_port, wait_port

pytestmark = pytest.mark.slow


def demo_argv(tmp_path: Path, database_url: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(BIN / "demo.py"),
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--state-dir",
        str(tmp_path / "state"),
        "--owner-file",
        str(tmp_path / "owner"),
        *extra,
    ]


def run_demo(tmp_path: Path, database_url: str, duration: int = 20) -> tuple[str, dict[str, Any]]:
    port = free_port()
    env = {**os.environ, "DURATION": str(duration)}  # as `make demo DURATION=20` passes it
    proc = subprocess.run(
        demo_argv(tmp_path, database_url, port),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not wait_port("127.0.0.1", port, timeout=0.5), "the cloud outlived the demo"
    summary: dict[str, Any] = json.loads((tmp_path / "state" / "summary.json").read_text())
    return proc.stdout, summary


def readings(db: Session, sensor_id: str, run_id: str) -> list[models.TelemetryReading]:
    q = select(models.TelemetryReading).where(
        models.TelemetryReading.sensor_id == uuid.UUID(sensor_id),
        models.TelemetryReading.run_id == uuid.UUID(run_id),
    )
    return list(db.scalars(q))


def check_database(
    database_url: str, summary: dict[str, Any], mqtt: bool, seconds: int = 20
) -> None:
    engine = create_engine(normalize_database_url(database_url))
    run_id, sensors = summary["run_id"], summary["sensors"]
    try:
        with Session(engine) as db:
            scenario = readings(db, sensors["temperature_raw"], run_id)
            assert len(scenario) >= 5 * seconds  # 10 Hz, less start-up
            for r in scenario:  # the scenario's linear profile a=1.23, b=0.2
                assert r.value == pytest.approx(1.23 * r.raw_value + 0.2)
                assert r.profile_version == "v1" and not r.late

            furnace = readings(db, sensors["furnace_tc_k"], run_id)
            assert len(furnace) >= 5 * seconds  # simulator at 10 Hz, through the edge
            for r in furnace:  # type K, NIST ITS-90, cold junction 24.5 °C
                expected = compensated_temperature_c("K", r.raw_value, 24.5)
                assert r.value == pytest.approx(expected, abs=1e-6)
                assert 0 < r.value < 460
            assert max(r.value for r in furnace) > 50  # the furnace heated up

            chamber = readings(db, sensors["chamber_mqtt"], run_id)
            assert (len(chamber) >= 10) if mqtt else (chamber == [])
            assert len(scenario) == summary["readings"]["temperature_raw"]
            assert len(furnace) == summary["readings"]["furnace_tc_k"]

            loss = db.scalars(
                select(models.Metric).where(models.Metric.run_id == uuid.UUID(run_id))
            ).all()
            assert {m.name for m in loss} == {"loss"} and len(loss) >= seconds // 2
            assert sorted(m.step for m in loss) == list(range(1, len(loss) + 1))

            kinds = set(
                db.scalars(
                    select(models.Event.kind).where(
                        models.Event.project_id == uuid.UUID(summary["project_id"])
                    )
                )
            )
            assert {
                "sensor.registered",
                "experiment.created",
                "run.created",
                "capture_session.started",
                "telemetry.ingested",
                "metrics.logged",
                "capture_session.stopped",
                "run.status_changed",
                "experiment.archived",
            } <= kinds

            session = db.get(models.CaptureSession, uuid.UUID(summary["capture_session_id"]))
            run = db.get(models.Run, uuid.UUID(run_id))
            warmup = db.get(models.Run, uuid.UUID(summary["warmup_run_id"]))
            experiment = db.get(models.Experiment, uuid.UUID(summary["experiment_id"]))
            assert session is not None and session.status == "succeeded"
            assert run is not None and run.status == "succeeded"
            assert warmup is not None and warmup.status == "cancelled"
            assert experiment is not None and experiment.status == "archived"
            assert experiment.archived_at is not None
    finally:
        engine.dispose()


def broker_up() -> bool:
    return wait_port("127.0.0.1", 1883, timeout=1)


def test_make_demo_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    out, summary = run_demo(tmp_path, url)

    assert "http://127.0.0.1:" in out and "== what landed ==" in out
    mqtt = broker_up()
    if not mqtt:
        assert "no broker" in out
    assert summary["statuses"] == {
        "capture_session": "succeeded",
        "run": "succeeded",
        "warmup_run": "cancelled",
        "experiment": "archived",
    }
    check_database(url, summary, mqtt)
    config = tmp_path / "state" / "edge.toml"
    assert config.stat().st_mode & 0o777 == 0o600  # it holds the sensors' tokens
    assert "readable by every user" not in (tmp_path / "state" / "logs" / "edge.log").read_text()
    if mqtt:  # the demo's edge left no session behind to queue readings for ever
        from tests.edge.test_mqtt_identity import resume
        from tests.support.services import shared_mosquitto

        demo_edge = f"benchlink-demo-{summary['run_id']}"
        topic = f"benchlink/sensors/{summary['sensors']['chamber_mqtt']}/readings"
        assert resume(shared_mosquitto(), demo_edge, topic, wait_s=0.5) == (False, 0)


def test_make_demo_twice_reuses_the_project_and_the_scenario_sensor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    _, first = run_demo(tmp_path, url, duration=5)
    _, second = run_demo(tmp_path, url, duration=5)
    assert second["project_id"] == first["project_id"]
    assert second["sensors"] == first["sensors"]  # no second temperature_raw
    assert second["run_id"] != first["run_id"]
    assert second["readings"]["temperature_raw"] > 0  # its token still works


def test_make_demo_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    out, summary = run_demo(tmp_path, pg_url)
    assert "migrated empty -> " in out
    check_database(pg_url, summary, broker_up())


def test_a_second_demo_on_a_port_in_use_says_how_to_pick_another(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            demo_argv(tmp_path, f"sqlite:///{tmp_path / 'demo.db'}", port),
            cwd=REPO,
            env={**os.environ, "DURATION": "5"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    assert f"already listens on 127.0.0.1:{port}" in out, out
    assert f'make demo DEMO_ARGS="--port {port + 1}"' in out, out


def test_ctrl_c_wraps_up_and_stops_every_child(tmp_path: Path) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {k: v for k, v in os.environ.items() if k != "DURATION"}
    proc = subprocess.Popen(
        demo_argv(tmp_path, url, port),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        lines.append(line)
        if "== the demo is running ==" in line or time.monotonic() > deadline:
            break
    time.sleep(4)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the script
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "SIGINT: wrapping up" in out and "== what landed ==" in out
    assert not wait_port("127.0.0.1", port, timeout=0.5)
    state = str(tmp_path / "state")
    leftovers = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and state.encode() in _cmdline(p)
    ]
    assert leftovers == [], f"child processes left running: {leftovers}"
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    assert summary["statuses"]["run"] == "succeeded"


def test_ctrl_c_wraps_up_when_its_output_is_gone(tmp_path: Path) -> None:
    """``make demo | tee demo.log`` and Ctrl-C: the terminal's SIGINT stops tee too, so the
    wrap-up writes into a closed pipe; it must still close the run and write the summary."""
    port = free_port()
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env = {k: v for k, v in os.environ.items() if k != "DURATION"}
    proc = subprocess.Popen(
        demo_argv(tmp_path, url, port),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        if "== the demo is running ==" in line or time.monotonic() > deadline:
            break
    time.sleep(2)
    proc.stdout.close()  # tee is gone
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert not wait_port("127.0.0.1", port, timeout=0.5)
    logs = tmp_path / "state" / "logs"
    transcript = (logs / "demo.log").read_text()
    summary_file = tmp_path / "state" / "summary.json"
    assert summary_file.exists(), f"exit {proc.returncode}; the demo said:\n{transcript}" + "".join(
        f"\n--- {log.name}:\n{log.read_text()[-3000:]}" for log in sorted(logs.glob("*.log"))
    )
    assert proc.returncode == 0, transcript
    # What it said after tee was gone is in its transcript: the wrap-up, and where to browse.
    assert "SIGINT: wrapping up" in transcript
    assert "Everything stays in" in transcript.split("SIGINT: wrapping up")[1]
    summary = json.loads(summary_file.read_text())
    assert summary["statuses"] == {
        "capture_session": "succeeded",
        "run": "succeeded",
        "warmup_run": "cancelled",
        "experiment": "archived",
    }


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def test_make_demo_on_a_clean_clone(tmp_path: Path) -> None:
    """``make demo DURATION=N`` in a fresh clone of the committed tree, on its own defaults
    (var/ of the clone). The clone's venv is this interpreter, so nothing is downloaded."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    venv_bin = clone / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    os.utime(clone / "pyproject.toml", (0, 0))  # the install stamp is newer: no `pip install`
    (clone / ".venv" / ".installed-stamp").touch()
    port = free_port()
    proc = subprocess.run(
        ["make", "demo", "DURATION=10", f"DEMO_ARGS=--port {port}"],
        cwd=clone,
        env={k: v for k, v in os.environ.items() if k not in ("DURATION", "PYTHONPATH")},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "== what landed ==" in proc.stdout
    summary = json.loads((clone / "var" / "demo" / "summary.json").read_text())
    assert (clone / "var" / "demo_owner").read_text().strip() == summary["owner_user_id"]
    check_database(f"sqlite:///{clone / 'var' / 'demo.db'}", summary, broker_up(), seconds=10)
