"""Chart query: one session with a million readings (ingested through the API, so with the
summaries ingest keeps), ``GET /telemetry/series?max_points=2000``, against reading all of
that session's (timestamp, value) pairs straight from PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.harness import Cloud, Row, Sizes, libpq, pg_database, post_all
from bench.ingest import telemetry_bodies
from tests.support.cloud import Bench, backdate, bootstrap


def fill(url: str, cloud_url: str, bench: Bench, n: int, start: datetime) -> None:
    """Ingest ``n`` readings (10 kHz, a slow sine with spikes) through the API, 1000 a batch
    as the edge sends them, so that the session has the summaries ingest keeps."""

    def value(i: int) -> float:
        return 20 + 5 * math.sin(i / 50_000) + (30 if i % 99_991 == 0 else 0)

    bodies = telemetry_bodies(bench, n, start, value)
    headers = [{"Authorization": f"Bearer {bench.token}", "Content-Type": "application/json"}]
    asyncio.run(post_all(cloud_url, "/api/v1/telemetry", bodies, headers * len(bodies), 4, 202))
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        # What autovacuum does shortly after a bulk load; the plan then may read the index only.
        conn.execute("VACUUM ANALYZE telemetry_readings")
        conn.execute("VACUUM ANALYZE telemetry_rollups")


def read_all(url: str, bench: Bench) -> float:
    """Seconds to fetch every (ts, value) of the session into Python: the naive chart."""
    with psycopg.connect(libpq(url)) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ts, value FROM telemetry_readings WHERE capture_session_id = %s"
                " AND sensor_id = %s ORDER BY ts, id",
                (bench.capture_session_id, bench.sensor_id),
            )
            rows = cur.fetchall()
        elapsed = time.perf_counter() - started
    assert len(rows) > 0
    return elapsed


def chart(sizes: Sizes, logs: Path) -> Row:
    n = sizes.chart_readings
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-chart.log") as cloud:
        bench = bootstrap(cloud.url)
        start = datetime.now(UTC) - timedelta(hours=3)
        backdate(url, bench.capture_session_id, start)  # a session takes no earlier reading
        fill(url, cloud.url, bench, n, start)
        params: dict[str, str | int] = {
            "sensor_id": bench.sensor_id,
            "capture_session_id": bench.capture_session_id,
            "max_points": 2000,
        }
        timings = []
        with bench.client() as c:
            c.base_url = httpx.URL(cloud.url)
            assert cloud.rss is not None
            cloud.rss.reset()
            for i in range(sizes.repeats + 1):
                t0 = time.perf_counter()
                r = c.get("/api/v1/telemetry/series", params=params)
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                body = r.json()
                assert body["total"] == n, body["total"]
                assert body["downsampled"] and len(body["points"]) <= 2000
                if i:  # the first request warms caches and connections
                    timings.append(elapsed * 1000)
            cloud_rss = cloud.rss.mb
        everything = statistics.median(read_all(url, bench) for _ in range(3)) * 1000
        median = statistics.median(timings)
        return Row(
            name="chart_query",
            what=f"chart query ({n:,} readings), ms",
            figure=median,
            unit="ms",
            ceiling=everything,
            ceiling_what="fetch all (ts, value) via psycopg",
            target="< 200 ms",
            passed=median < 200,
            rss_mb={"cloud": cloud_rss},
            extra={"timings_ms": [round(t, 1) for t in timings], "points": len(body["points"])},
        )
