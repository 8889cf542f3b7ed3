"""Exports. CSV: one session of a million readings through ``GET /telemetry/export.csv``, against
PostgreSQL's own ``COPY (SELECT ...) TO STDOUT (FORMAT CSV)`` of the same rows; and how much
the API's memory grows while it streams them (it must stay flat: the export streams from a
server-side cursor). Parquet and Arrow: a run of ten million readings, against reading the
same rows with psycopg's binary server-side cursor."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from bench.harness import (
    Cloud,
    MachineCpu,
    Row,
    Sizes,
    libpq,
    pg_database,
)
from bench.ingest import store_readings
from bench.project import Bench, bootstrap
from bench.store import Target
from bench.store import store_readings as store

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


# --- Parquet and Arrow ------------------------------------------------------------------------

#: The API's RSS may grow by less than this during a Parquet or Arrow export of any size.
MAX_COLUMNAR_GROWTH_MB = 100
#: The export's rate against the raw cursor's: at least this.
MIN_COLUMNAR_RATIO = 0.5
#: Rounds of (ceiling, Parquet, Arrow): one sample of each on this shared two-core machine
#: moved the Parquet figure by a quarter between runs of the same export code.
COLUMNAR_ROUNDS = 2
#: 10 kHz: one sensor's readings, as a fast thermocouple logger sends them.
STEP_US = 100


def cursor_read(url: str, run_id: str) -> tuple[float, int]:
    """Seconds and rows for the fastest plain client read of the export's rows: psycopg's
    binary server-side cursor, the export's own columns and order, nothing done with them."""
    rows = 0
    with psycopg.connect(libpq(url)) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        with conn.cursor(name="ceiling", binary=True) as cur:
            started = time.perf_counter()
            cur.execute(
                "SELECT ts, sensor_id, run_id, capture_session_id, raw_value, value,"
                " profile_version, late FROM telemetry_readings WHERE run_id = %s"
                " ORDER BY ts, id",
                (run_id,),
            )
            while page := cur.fetchmany(10_000):
                rows += len(page)
            return time.perf_counter() - started, rows


def _download(c: httpx.Client, cloud: Cloud, fmt: str, run_id: str) -> dict[str, float]:
    """One export read to the end: seconds, bytes, the API's RSS growth, the API's CPU
    seconds and how busy the machine was meanwhile."""
    assert cloud.rss is not None
    cloud.rss.reset()
    before = cloud.rss.mb
    cpu = cloud.cpu_seconds()
    machine = MachineCpu()
    size = 0
    started = time.perf_counter()
    with c.stream("GET", "/api/v1/telemetry/export", params={"format": fmt, "run_id": run_id}) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            size += len(chunk)
    elapsed = time.perf_counter() - started
    peak = cloud.rss.mb
    return {
        "seconds": elapsed,
        "bytes": size,
        "growth": peak - before,
        "peak": peak,
        "api_cpu_s": cloud.cpu_seconds() - cpu,
        "busy": machine.busy(),
    }


def _warm(c: httpx.Client, fmt: str, sensor_id: str, workers: int) -> None:
    """Empty exports just before a measured one, on the connection it will use: the worker
    that serves it has its route and pyarrow loaded (the connection closes while the ceiling
    reads, and the next one may reach a worker that never exported)."""
    small = {"format": fmt, "sensor_id": sensor_id, "until": "2000-01-01T00:00:00Z"}
    for _ in range(2 * workers):
        c.get("/api/v1/telemetry/export", params=small).raise_for_status()


def columnar(sizes: Sizes, logs: Path) -> list[Row]:
    """Parquet and Arrow exports of one run, in :data:`COLUMNAR_ROUNDS` rounds alternating
    with reads of the same rows by a raw cursor (the ceiling), one before each round and one
    after the last. Each side's figure is its fastest round, so that a slow moment of the
    machine flatters neither the ceiling nor the export."""
    n = sizes.export_columnar_readings
    with (
        pg_database() as url,
        Cloud(url, sizes.cloud_workers, logs / "cloud-columnar.log") as cloud,
    ):
        bench = bootstrap(cloud.url)
        target = Target.of(bench)
        start_us = (time.time_ns() // 1000 - 3 * 3_600_000_000) // STEP_US * STEP_US
        t0 = time.perf_counter()
        store(url, [target], start_us, STEP_US, range(n), lambda i: 20 + (i % 1000) / 100)
        print(f"   stored {n:,} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE telemetry_readings")
        ceilings: list[tuple[float, int]] = []
        got: dict[str, list[dict[str, float]]] = {"parquet": [], "arrow": []}
        with bench.client() as c:
            c.base_url = httpx.URL(cloud.url)
            c.timeout = httpx.Timeout(1800)
            for _ in range(COLUMNAR_ROUNDS):
                ceilings.append(cursor_read(url, bench.run_id))
                for fmt, rounds in got.items():
                    _warm(c, fmt, bench.sensor_id, sizes.cloud_workers)
                    rounds.append(_download(c, cloud, fmt, bench.run_id))
        ceilings.append(cursor_read(url, bench.run_id))
    assert all(rows == n for _, rows in ceilings), ceilings
    best = min(s for s, _ in ceilings)
    return [_columnar_row(fmt, n, rounds, best, ceilings) for fmt, rounds in got.items()]


def _columnar_row(
    fmt: str, n: int, rounds: list[dict[str, float]], best: float, ceilings: list[tuple[float, int]]
) -> Row:
    m = min(rounds, key=lambda r: r["seconds"])
    rate = n / m["seconds"]
    ratio = rate / (n / best)
    mb_s = m["bytes"] / m["seconds"] / 1e6
    growth = max(r["growth"] for r in rounds)
    return Row(
        name=f"export_{fmt}",
        what=f"{fmt} export ({n:,} readings), readings/s; {mb_s:,.1f} MB/s;"
        f" API RSS {growth:+.0f} MB",
        figure=rate,
        unit="readings/s",
        ceiling=n / best,
        ceiling_what="psycopg binary server-side cursor, same rows",
        target=f">= {MIN_COLUMNAR_RATIO:.0%} of ceiling, RSS growth < {MAX_COLUMNAR_GROWTH_MB} MB",
        passed=ratio >= MIN_COLUMNAR_RATIO and growth < MAX_COLUMNAR_GROWTH_MB,
        rss_mb={"cloud": max(r["peak"] for r in rounds)},
        extra={
            "mb_per_s": round(mb_s, 1),
            "bytes": int(m["bytes"]),
            "seconds": [round(r["seconds"], 2) for r in rounds],
            "rss_growth_mb": round(growth, 1),
            "ceiling_seconds": [round(s, 2) for s, _ in ceilings],
            # The API's own cost per million readings, whatever else the machine was doing:
            # what says whether the export itself got slower when its rate moves.
            "api_cpu_s_per_million": [round(r["api_cpu_s"] * 1e6 / n, 2) for r in rounds],
            "machine_busy_pct": [r["busy"] for r in rounds],
        },
    )
