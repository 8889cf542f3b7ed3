"""kill -9 of a real API process in the middle of a reprocessing job: after a restart the job
resumes where its last committed chunk ended and finishes, each reading converted exactly
once (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud.db.engine import make_engine
from cloud.db.models import ReprocessedValue, ReprocessJob, TelemetryReading
from tests.support.cloud import Bench, CloudServer, backdate, bootstrap

N = 30_000
START = datetime(2025, 3, 1, tzinfo=UTC)
V3 = {"version": "v3", "kind": "polynomial", "payload": {"coefficients": [-3.0, 1.5, 0.01]}}


def raw(i: int) -> float:
    return 1.0 + (i % 997) * 0.01


def _job_row(url: str, job_id: str) -> Any:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(ReprocessJob).where(ReprocessJob.id == uuid.UUID(job_id))
            ).one()
            return row
    finally:
        engine.dispose()


def _values(url: str, job_id: str) -> dict[int, float]:
    """The job's stored values by reading index (its timestamp's, in ms from the first)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(TelemetryReading.ts, ReprocessedValue.value)
                .join(ReprocessedValue, ReprocessedValue.reading_id == TelemetryReading.id)
                .where(ReprocessedValue.job_id == uuid.UUID(job_id))
            ).all()
    finally:
        engine.dispose()
    return {round((ts - START).total_seconds() * 1000): v for ts, v in rows}


def _send(bench: Bench, start: datetime) -> None:
    with httpx.Client(base_url=bench.base_url, timeout=60) as c:
        for a in range(0, N, 5000):
            readings = [
                {"timestamp": (start + timedelta(milliseconds=i)).isoformat(), "raw_value": raw(i)}
                for i in range(a, a + 5000)
            ]
            body = {
                "sensor_id": bench.sensor_id,
                "run_id": bench.run_id,
                "capture_session_id": bench.capture_session_id,
                "readings": readings,
            }
            r = c.post(
                "/api/v1/telemetry", json=body, headers={"Authorization": f"Bearer {bench.token}"}
            )
            assert r.status_code == 202, r.text


def test_kill_9_in_the_middle_of_a_job_resumes_and_converts_each_reading_once(
    database_url: str, tmp_path: Path
) -> None:
    env = {
        "BENCHLINK_REPROCESS_CHUNK": "500",
        "BENCHLINK_REPROCESS_PAUSE_S": "0.03",
        "BENCHLINK_REPROCESS_EVERY_S": "0.2",
    }
    server = CloudServer(database_url, env=env, log_path=tmp_path / "cloud.log")
    server.start()
    try:
        bench = bootstrap(server.url)
        start = START
        backdate(database_url, bench.capture_session_id, datetime(2024, 1, 1, tzinfo=UTC))
        _send(bench, start)
        with bench.client() as c:
            r = c.put(f"/api/v1/sensors/{bench.sensor_id}/conversion-profile", json=V3)
            assert r.status_code == 200, r.text
            r = c.post(
                f"/api/v1/sensors/{bench.sensor_id}/reprocess",
                json={"profile_version": "v3", "run_id": bench.run_id},
            )
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            deadline = time.monotonic() + 60
            while c.get(f"/api/v1/jobs/{job}").json()["progress"]["done"] < 3000:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        server.kill()  # SIGKILL, in the middle of the job
        at_kill = _job_row(database_url, job)
        assert at_kill.status == "running" and 3000 <= at_kill.done < N, at_kill
        assert len(_values(database_url, job)) == at_kill.converted == at_kill.done

        server.start()
        with bench.client() as c:
            deadline = time.monotonic() + 120
            while (state := c.get(f"/api/v1/jobs/{job}").json())["status"] == "running":
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
        assert state["status"] == "succeeded", state
        # Exactly once: each chunk counted once, one value per reading, each v3's; a chunk
        # redone would have found its values stored by this job and failed the job
        # (reprocess_chunks.ConvertedTwice).
        assert state["progress"] == {"done": N, "total": N}
        assert state["converted"] == N
        values = _values(database_url, job)
        assert sorted(values) == list(range(N))
        for i, v in values.items():
            assert v == pytest.approx(-3.0 + 1.5 * raw(i) + 0.01 * raw(i) ** 2)
        readings = bench.readings()
        assert len(readings) == N and {r["profile_version"] for r in readings} == {"v3"}
    finally:
        server.stop()
