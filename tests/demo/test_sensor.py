"""bin/demo_sensor.py: the signal, the client's retries, and both modes against a live cloud."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_signal import Signal, generate, heat_profile
from demo_telemetry import TelemetryClient, TelemetryRejected

from tests.demo.conftest import BIN, run_script
from tests.support.cloud import CloudServer, backdate, bootstrap

K_PROFILE = {
    "version": "v1",
    "kind": "thermocouple",
    "payload": {"type": "K", "cold_junction_c": 24.5, "display": "C", "input": "mV"},
}


def sensor_args(bench: Any, *extra: str) -> list[str]:
    return [
        "--base-url",
        bench.base_url,
        "--sensor-id",
        bench.sensor_id,
        "--token",
        bench.token,
        "--run-id",
        bench.run_id,
        "--capture-session-id",
        bench.capture_session_id,
        "--owner-user-id",
        bench.owner_user_id,
        "--project-id",
        bench.project_id,
        "--json",
        *extra,
    ]


def test_thermocouple_signal_is_the_nist_emf_of_the_heating_curve() -> None:
    quiet = Signal(thermocouple_type="K", cold_junction_c=24.5, noise_c=0.0)
    # At t=0 the furnace is at ambient (25 °C): ~20 µV against a 24.5 °C cold junction.
    assert quiet.raw(0.0) == pytest.approx(0.0203, abs=0.001)
    # Near the setpoint a type K gives about 17 mV (NIST: 420 °C -> 17.243 mV, 24.5 °C -> 0.979).
    assert quiet.raw(600.0) == pytest.approx(17.243 - 0.979, abs=0.01)
    assert quiet.meta(3) == {"step": 3, "cold_junction_c": 24.5}


def test_plain_signal_inverts_the_linear_profile() -> None:
    plain = Signal(scale=1.23, offset=0.2, noise_c=0.0)
    assert 1.23 * plain.raw(600.0) + 0.2 == pytest.approx(heat_profile(600.0), abs=0.01)
    assert plain.meta(1) == {"step": 1}


def test_generated_readings_are_spaced_by_the_rate_with_steps() -> None:
    start = datetime(2025, 12, 5, 12, 0, tzinfo=UTC)
    rows = list(generate(Signal(rng=random.Random(1)), start, 2.0, 5.0))
    assert len(rows) == 10
    assert rows[0]["timestamp"] == "2025-12-05T12:00:00Z"
    assert rows[1]["timestamp"] == "2025-12-05T12:00:00.200000Z"
    assert [r["meta"]["step"] for r in rows] == list(range(1, 11))


def _client(handler: Any) -> TelemetryClient:
    return TelemetryClient(
        "http://cloud",
        "tok",
        "s",
        "r",
        "c",
        backoff_initial_s=0.001,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def _accepted(n: int) -> dict[str, Any]:
    return {"accepted": n, "late": 0}


def test_retries_5xx_409_and_network_errors_with_the_same_idempotency_key() -> None:
    # A fault at a precise moment is what a mock is for; the happy path runs on the real cloud.
    seen: list[httpx.Request] = []
    answers = iter(["connect", 503, 409, 202])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = next(answers)
        if answer == "connect":
            raise httpx.ConnectError("refused", request=request)
        assert isinstance(answer, int)
        return httpx.Response(answer, json=_accepted(1) if answer == 202 else {"detail": "x"})

    client = _client(handler)
    client.send([{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 1.23, "meta": {"step": 1}}])

    assert client.stats.retries == 3 and client.stats.accepted == 1
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(keys) == 1 and len(seen) == 4
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert json.loads(seen[0].content)["readings"][0]["meta"] == {"step": 1}


def test_a_permanent_rejection_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(401, json={"detail": "unknown token"})

    with pytest.raises(TelemetryRejected, match="unknown token"):
        _client(handler).send([{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 1.0}])
    assert len(calls) == 1


def test_gives_up_after_max_retries() -> None:
    client = _client(lambda request: httpx.Response(503, json={"detail": "down"}))
    client.max_retries = 2
    with pytest.raises(RuntimeError, match="gave up after 3 attempts"):
        client.send([{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 1.0}])
    assert client.stats.retries == 2


def test_stream_mode_lands_every_reading_in_real_time(cloud: CloudServer) -> None:
    bench = bootstrap(cloud.url, profile=K_PROFILE)
    args = sensor_args(bench, "--mode", "stream", "--duration", "2", "--rate", "20")
    args += ["--thermocouple-type", "K"]
    started = datetime.now(UTC)
    summary = json.loads(run_script("demo_sensor.py", *args).stdout)

    readings = bench.readings()
    assert summary["mode"] == "stream"
    assert summary["sent"] == summary["accepted"] == len(readings)
    assert 30 <= len(readings) <= 42  # about 20 Hz for 2 s
    assert summary["batches"] >= 4  # small batches, sent as it goes
    assert all(r["timestamp"] >= started.isoformat().replace("+00:00", "Z") for r in readings)
    # The cloud converted the emf back to the furnace's temperature (ambient at the start).
    assert readings[0]["value"] == pytest.approx(25.0, abs=3.0)
    assert [r["meta"]["step"] for r in readings] == list(range(1, len(readings) + 1))


def test_batch_mode_sends_captured_data_in_large_batches(cloud: CloudServer) -> None:
    bench = bootstrap(cloud.url, profile=K_PROFILE)
    # A session capturing for a quarter of an hour: ten minutes of captured data fit in it.
    backdate(
        cloud.database_url, bench.capture_session_id, datetime.now(UTC) - timedelta(minutes=15)
    )
    args = sensor_args(bench, "--mode", "batch", "--duration", "600", "--rate", "20")
    args += ["--batch-size", "5000", "--thermocouple-type", "K"]
    summary = json.loads(run_script("demo_sensor.py", *args).stdout)

    readings = bench.readings()
    assert summary["sent"] == summary["accepted"] == len(readings) == 12_000
    assert summary["batches"] == 3 and summary["late"] == 0
    values = [r["value"] for r in readings]
    assert values[0] == pytest.approx(25.0, abs=3.0)
    assert max(values) == pytest.approx(420 + 0.046 * 395, abs=3)  # the controller overshoots
    assert values[-1] == pytest.approx(420.0, abs=3.0)


def test_batch_mode_stays_inside_a_session_that_started_just_now(cloud: CloudServer) -> None:
    """docs/demo.md's `--mode batch --duration 600` into the session it started a minute
    before: the data starts with the session, not nine minutes before it."""
    bench = bootstrap(cloud.url, profile=K_PROFILE)
    backdate(
        cloud.database_url, bench.capture_session_id, datetime.now(UTC) - timedelta(seconds=60)
    )
    with bench.client() as c:
        session = c.get(
            f"/api/v1/runs/{bench.run_id}/capture-sessions/{bench.capture_session_id}"
        ).json()
    args = sensor_args(bench, "--mode", "batch", "--duration", "600", "--rate", "10")
    args += ["--thermocouple-type", "K"]
    done = run_script("demo_sensor.py", *args)
    summary = json.loads(done.stdout)
    readings = bench.readings()
    assert summary["sent"] == summary["accepted"] == len(readings)
    assert 590 <= len(readings) <= 620  # about 60 s at 10 Hz, not 600 s
    assert min(r["timestamp"] for r in readings) >= session["started_at"]
    assert "s of captured data, not 600" in done.stderr


def test_batch_mode_without_the_owner_says_what_to_pass(cloud: CloudServer, tmp_path: Path) -> None:
    bench = bootstrap(cloud.url)
    args = sensor_args(bench, "--mode", "batch")
    cut = args.index("--owner-user-id")
    del args[cut : cut + 4]
    env = {k: v for k, v in os.environ.items() if k not in ("OWNER", "PROJECT")}
    missing = tmp_path / "no_owner"
    proc = subprocess.run(
        [sys.executable, str(BIN / "demo_sensor.py"), *args, "--owner-file", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "run bin/demo_seed.py" in proc.stderr
    assert str(missing) in proc.stderr and "--owner-user-id" in proc.stderr
    assert "Traceback" not in proc.stderr and bench.readings() == []


def test_batch_mode_finds_the_owner_the_seed_saved_and_its_project(
    cloud: CloudServer, tmp_path: Path
) -> None:
    """The scenario's command names no owner: the one bin/demo_seed.py saved is used, and the
    project holding the session is found."""
    bench = bootstrap(cloud.url)
    backdate(
        cloud.database_url, bench.capture_session_id, datetime.now(UTC) - timedelta(seconds=30)
    )
    owner_file = tmp_path / "demo_owner"
    owner_file.write_text(bench.owner_user_id + "\n")
    args = sensor_args(bench, "--mode", "batch", "--duration", "600")
    cut = args.index("--owner-user-id")
    del args[cut : cut + 4]
    env = {k: v for k, v in os.environ.items() if k not in ("OWNER", "PROJECT")}
    proc = subprocess.run(
        [sys.executable, str(BIN / "demo_sensor.py"), *args, "--owner-file", str(owner_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    readings = bench.readings()
    assert readings and json.loads(proc.stdout)["accepted"] == len(readings)


def test_plain_numbers_for_the_scenarios_linear_sensor(cloud: CloudServer) -> None:
    profile = {"version": "v1", "kind": "linear", "payload": {"a": 1.23, "b": 0.2}}
    bench = bootstrap(cloud.url, profile=profile)
    backdate(cloud.database_url, bench.capture_session_id, datetime.now(UTC) - timedelta(minutes=1))
    args = sensor_args(bench, "--mode", "batch", "--duration", "10", "--rate", "10")
    args += ["--scale", "1.23", "--offset", "0.2", "--profile", "cycle"]
    run_script("demo_sensor.py", *args)
    readings = bench.readings()
    assert len(readings) == 100
    assert all(r["meta"] == {"step": i} for i, r in enumerate(readings, start=1))
    assert readings[0]["value"] == pytest.approx(220.0, abs=3.0)  # the cycle's midpoint


def test_a_wrong_token_fails_loudly(cloud: CloudServer) -> None:
    bench = bootstrap(cloud.url)
    bench.token = "bls_not-a-token"
    proc = subprocess.run(
        [sys.executable, str(BIN / "demo_sensor.py"), *sensor_args(bench, "--duration", "1")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "HTTP 401" in proc.stderr
