"""Reprocessing: how fast a job re-derives stored readings under another profile version
(against a raw binary COPY of as many rows, the telemetry ingest ceiling, measured in the
same run), what a job costs ingest going on beside it (the same ingest with and without a
job running), and what a chart of reprocessed values costs against one of first values (the
former reads the readings, the latter the summaries ingest keeps)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Cloud, Row, Sizes, pg_database, post_all
from bench.ingest import copy_telemetry, telemetry_bodies
from bench.project import Bench, backdate, bootstrap
from bench.query import fill

V2 = {"version": "v2", "kind": "polynomial", "payload": {"coefficients": [0.5, 1.01, 1e-4]}}


def _ingest(cloud: Cloud, bench: Bench, n: int, start: datetime, clients: int) -> float:
    """``n`` readings through the API as the edge sends them; readings/s."""
    bodies = telemetry_bodies(bench, n, start)
    headers = [
        {
            "Authorization": f"Bearer {bench.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        for _ in bodies
    ]
    elapsed = asyncio.run(
        post_all(cloud.url, "/api/v1/telemetry", bodies, headers, clients, 202, cloud.rss)
    )
    return n / elapsed


def _start_job(c: httpx.Client, bench: Bench) -> str:
    r = c.post(f"/api/v1/sensors/{bench.sensor_id}/reprocess", json={"profile_version": "v2"})
    r.raise_for_status()
    return str(r.json()["id"])


def _finish(c: httpx.Client, job: str) -> dict[str, Any]:
    while True:
        state: dict[str, Any] = c.get(f"/api/v1/jobs/{job}").json()
        if state["status"] not in ("queued", "running"):
            assert state["status"] == "succeeded", state
            return state
        time.sleep(0.05)


def _rate(state: dict[str, Any]) -> float:
    took = datetime.fromisoformat(state["finished_at"]) - datetime.fromisoformat(
        state["started_at"]
    )
    return float(state["progress"]["done"]) / took.total_seconds()


def _chart_ms(c: httpx.Client, bench: Bench, repeats: int, **params: str) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = c.get(
            "/api/v1/telemetry/series",
            params={"sensor_id": bench.sensor_id, "max_points": "2000", **params},
        )
        r.raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def reprocess(sizes: Sizes, logs: Path) -> list[Row]:
    n, m = sizes.reprocess_readings, sizes.ingest_readings
    with (
        pg_database() as url,
        Cloud(url, sizes.cloud_workers, logs / "cloud-reprocess.log") as cloud,
    ):
        target, sender = bootstrap(cloud.url), bootstrap(cloud.url)
        start = datetime.now(UTC) - timedelta(hours=3)
        for b in (target, sender):
            backdate(url, b.capture_session_id, start)
        fill(url, cloud.url, target, n, start)  # through the API: batches and summaries
        assert cloud.rss is not None
        cloud.rss.reset()
        ceilings, alone, during, rates, overlapped = [], [], [], [], []
        with target.client() as c:
            c.put(f"/api/v1/sensors/{target.sensor_id}/conversion-profile", json=V2)
            for k in range(sizes.ingest_rounds):
                at = start + timedelta(minutes=30 * k)
                ceilings.append(copy_telemetry(url, sender, m, at))
                alone.append(_ingest(cloud, sender, m, at + timedelta(minutes=10), 8))
                rates.append(_rate(_finish(c, _start_job(c, target))))
                job = _start_job(c, target)
                t0 = datetime.now(UTC)
                during.append(_ingest(cloud, sender, m, at + timedelta(minutes=20), 8))
                t1 = datetime.now(UTC)
                state = _finish(c, job)
                # the job ran through the whole ingest round (else the round was partly alone)
                overlapped.append(datetime.fromisoformat(state["finished_at"]) >= t1 > t0)
            first_ms = _chart_ms(c, target, sizes.repeats, profile_version="v1")
            reprocessed_ms = _chart_ms(c, target, sizes.repeats)
    ceiling, rate = statistics.median(ceilings), statistics.median(rates)
    with_job, without = statistics.median(during), statistics.median(alone)
    rss = {"cloud": cloud.rss.mb}
    return [
        Row(
            name="reprocess",
            what="reprocess a run under another profile version, readings/s",
            figure=rate,
            unit="readings/s",
            ceiling=ceiling,
            ceiling_what="raw binary COPY, 1 process (the ingest ceiling)",
            target=">= 50% of ceiling",
            passed=rate >= 0.5 * ceiling,
            rss_mb=rss,
            extra={
                "readings": n,
                "rounds": [round(r) for r in rates],
                "ceiling_rounds": [round(x) for x in ceilings],
                "chart_first_values_ms": round(first_ms, 1),
                "chart_reprocessed_values_ms": round(reprocessed_ms, 1),
            },
        ),
        Row(
            name="reprocess_ingest",
            what="telemetry ingest with a reprocess job running, readings/s",
            figure=with_job,
            unit="readings/s",
            ceiling=without,
            ceiling_what="the same ingest, no job, same run",
            target=">= 80% of ceiling",
            passed=with_job >= 0.8 * without and all(overlapped),
            rss_mb=rss,
            extra={
                "with_job_rounds": [round(r) for r in during],
                "without_rounds": [round(r) for r in alone],
                "job_outlasted_round": overlapped,
            },
        ),
    ]
