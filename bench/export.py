"""CSV export: one session of a million readings through ``GET /telemetry/export.csv``, against
PostgreSQL's own ``COPY (SELECT ...) TO STDOUT (FORMAT CSV)`` of the same rows; and how much
the API's memory grows while it streams them (it must stay flat: the export streams from a
server-side cursor)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.harness import Cloud, Row, Sizes, libpq, pg_database
from bench.ingest import store_readings
from tests.support.cloud import Bench, bootstrap

#: The API's RSS may grow by less than this during an export of any size.
MAX_GROWTH_MB = 60


def copy_out(url: str, bench: Bench) -> tuple[float, int]:
    """Seconds and bytes for PostgreSQL to write the session's readings as CSV to a client."""
    size = 0
    with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        with cur.copy(
            "COPY (SELECT ts, sensor_id, run_id, capture_session_id, raw_value, value,"
            " profile_version, late FROM telemetry_readings WHERE run_id = %s ORDER BY ts, id)"
            " TO STDOUT (FORMAT CSV, HEADER)",
            (bench.run_id,),
        ) as copy:
            for chunk in copy:
                size += len(chunk)
        return time.perf_counter() - started, size


def export(sizes: Sizes, logs: Path) -> Row:
    n = sizes.export_readings
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-export.log") as cloud:
        bench = bootstrap(cloud.url)
        start = datetime.now(UTC) - timedelta(hours=1)
        store_readings(url, bench, n, start)
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE telemetry_readings")
        path = "/api/v1/telemetry/export.csv"
        with bench.client() as c:
            c.base_url = httpx.URL(cloud.url)
            c.timeout = httpx.Timeout(600)
            small = {"run_id": bench.run_id, "until": (start + timedelta(seconds=1)).isoformat()}
            for _ in range(2 * sizes.cloud_workers):  # warm every worker's route
                c.get(path, params=small).raise_for_status()
            assert cloud.rss is not None
            cloud.rss.reset()
            before = cloud.rss.mb
            lines = size = 0
            started = time.perf_counter()
            with c.stream("GET", path, params={"run_id": bench.run_id}) as r:
                r.raise_for_status()
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            elapsed = time.perf_counter() - started
            peak = cloud.rss.mb
            growth = peak - before
        assert lines == n + 1, lines
        ceiling_s, ceiling_size = copy_out(url, bench)
        return Row(
            name="export",
            what=f"CSV export ({n:,} readings), readings/s; API RSS {growth:+.0f} MB",
            figure=n / elapsed,
            unit="readings/s",
            ceiling=n / ceiling_s,
            ceiling_what="COPY ... TO STDOUT CSV via psycopg",
            target=f"RSS growth < {MAX_GROWTH_MB} MB",
            passed=growth < MAX_GROWTH_MB,
            rss_mb={"cloud": peak},
            extra={
                "rss_growth_mb": round(growth, 1),
                "seconds": round(elapsed, 2),
                "bytes": size,
                "copy_seconds": round(ceiling_s, 2),
                "copy_bytes": ceiling_size,
            },
        )
