"""Alarm evaluation's cost at ingest: the same batches into a sensor with five rules and into
one without, in alternating rounds on one cloud; the figure is the ratio of the two rates."""

from __future__ import annotations

import asyncio
import math
import statistics
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.harness import Cloud, Row, Sizes, libpq, pg_database, post_all
from bench.ingest import telemetry_bodies
from bench.project import Bench, backdate, bootstrap

#: A slow wave, 15 .. 25 over 20 s of readings (10 kHz): the rules below raise and clear a
#: few times a round, as alarms do (a rule that fires on every batch is a misconfigured one).
PERIOD = 200_000


def wave(i: int) -> float:
    return round(20 + 5 * math.sin(2 * math.pi * i / PERIOD), 4)


#: One rule of each reading kind.
RULES = (
    {"kind": "above", "threshold": 24.0, "for_s": 0.5, "hysteresis": 0.5},
    {"kind": "below", "threshold": 16.0, "hysteresis": 0.5},
    {"kind": "outside", "low": 15.5, "high": 24.5, "hysteresis": 0.1},
    {"kind": "rate", "threshold": 1.4, "window_s": 0.1, "hysteresis": 0.2},
    {"kind": "fault"},
)


def _with_rules(base_url: str, bench: Bench) -> None:
    with httpx.Client(base_url=base_url, timeout=30, headers=bench.headers) as c:
        for rule in RULES:
            c.post(f"/api/v1/sensors/{bench.sensor_id}/alarm-rules", json=rule).raise_for_status()


def _round(cloud: Cloud, bench: Bench, n: int, start: datetime, clients: int) -> float:
    bodies = telemetry_bodies(bench, n, start, wave)
    headers = [
        {
            "Authorization": f"Bearer {bench.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        for _ in bodies
    ]
    assert cloud.rss is not None
    elapsed = asyncio.run(
        post_all(cloud.url, "/api/v1/telemetry", bodies, headers, clients, 202, cloud.rss)
    )
    return n / elapsed


def alarm_ingest(sizes: Sizes, logs: Path) -> Row:
    n = sizes.ingest_readings
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-alarms.log") as cloud:
        plain, ruled = bootstrap(cloud.url), bootstrap(cloud.url)
        _with_rules(cloud.url, ruled)
        start = datetime.now(UTC) - timedelta(hours=3)
        for b in (plain, ruled):
            backdate(url, b.capture_session_id, start)
        assert cloud.rss is not None
        cloud.rss.reset()
        without, with_rules = [], []
        for k in range(sizes.ingest_rounds):
            at = start + timedelta(minutes=20 * k)
            without.append(_round(cloud, plain, n, at, sizes.ingest_clients))
            with_rules.append(_round(cloud, ruled, n, at, sizes.ingest_clients))
        with psycopg.connect(libpq(url)) as conn:
            row = conn.execute("SELECT count(*) FROM alarms").fetchone()
        raised = row[0] if row else 0
        assert raised > 0, "the rules raised nothing: the row would measure no evaluation"
        rate, ceiling = statistics.median(with_rules), statistics.median(without)
        return Row(
            name="alarm_ingest",
            what="telemetry ingest with 5 alarm rules per sensor, readings/s",
            figure=rate,
            unit="readings/s",
            ceiling=ceiling,
            ceiling_what="the same ingest, sensor without rules, same run",
            target=">= 90% of ceiling",
            passed=rate >= 0.9 * ceiling,
            rss_mb={"cloud": cloud.rss.mb},
            extra={
                "readings_per_round": n,
                "rules": len(RULES),
                "alarms_raised": raised,
                "with_rules_rounds": [round(r) for r in with_rules],
                "without_rounds": [round(r) for r in without],
            },
        )
