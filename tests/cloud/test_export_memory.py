"""Large reads in constant memory, measured on a real API process over real PostgreSQL: the
CSV export streams from a server-side cursor, and metrics ``max_points`` is downsampled in the
database. Growth is the API process's peak RSS during one request over its RSS before it."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.harness import PeakRss, libpq
from bench.ingest import store_readings
from tests.support.cloud import Bench, CloudServer, bootstrap

R = TypeVar("R")
N = 300_000
#: Today's code held every row: ~500 MB for 300k readings. Streaming needs a few chunks.
MAX_GROWTH_MB = 60


@pytest.fixture
def served(pg_url: str, tmp_path: Path) -> Iterator[tuple[CloudServer, Bench]]:
    with CloudServer(pg_url, log_path=tmp_path / "cloud.log") as cloud:
        yield cloud, bootstrap(cloud.url)


def _growth_mb(cloud: CloudServer, request: Callable[[], R]) -> tuple[float, R]:
    """How much the API's peak RSS rose over its RSS before, while ``request`` ran."""
    assert cloud.proc is not None
    rss = PeakRss(cloud.proc.pid)
    rss.reset()
    before = rss.mb
    result = request()
    return rss.mb - before, result


def test_export_of_a_large_session_streams_in_constant_memory(
    served: tuple[CloudServer, Bench], pg_url: str
) -> None:
    cloud, bench = served
    start = datetime.now(UTC) - timedelta(minutes=5)
    store_readings(pg_url, bench, N, start)
    path = "/api/v1/telemetry/export.csv"
    with bench.client() as c:
        # Warm the route's code and connections with a small export.
        small = {"run_id": bench.run_id, "until": (start + timedelta(milliseconds=1)).isoformat()}
        assert c.get(path, params=small).status_code == 200

        def export() -> list[list[str]]:
            with c.stream("GET", path, params={"run_id": bench.run_id}) as r:
                assert r.status_code == 200, r.read()
                return list(csv.reader(r.iter_lines()))

        growth, rows = _growth_mb(cloud, export)
    assert growth < MAX_GROWTH_MB, f"the API grew by {growth:.0f} MB during the export"

    with psycopg.connect(libpq(pg_url)) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        ref = conn.execute(
            "SELECT t.ts, t.sensor_id, t.run_id, t.capture_session_id, t.raw_value,"
            " p.input_unit, t.value, p.display_unit, t.profile_version, t.late"
            " FROM telemetry_readings t JOIN sensor_profiles p"
            " ON p.sensor_id = t.sensor_id AND p.version = t.profile_version"
            " WHERE t.run_id = %s ORDER BY t.ts, t.id",
            (bench.run_id,),
        ).fetchall()
    expected = [
        [t.isoformat(), str(s), str(r), str(c), repr(raw), ru, repr(v), vu, pv, str(late).lower()]
        for t, s, r, c, raw, ru, v, vu, pv, late in ref
    ]
    assert len(expected) == N and expected[0][5] and expected[0][7]  # units known
    assert rows[0] == [
        "timestamp",
        "sensor_id",
        "run_id",
        "capture_session_id",
        "raw_value",
        "raw_unit",
        "value",
        "value_unit",
        "profile_version",
        "late",
    ]
    assert rows[1:] == expected


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_a_large_columnar_export_streams_in_constant_memory(
    served: tuple[CloudServer, Bench], pg_url: str, fmt: str
) -> None:
    """200k readings as Parquet or Arrow: the API holds a row group, never the export; the
    file read back is the database's rows, exactly."""
    cloud, bench = served
    n = 200_000
    start = datetime.now(UTC) - timedelta(minutes=5)
    store_readings(pg_url, bench, n, start)
    path = "/api/v1/telemetry/export"
    with bench.client() as c:
        small = {"format": fmt, "run_id": bench.run_id,
                 "until": (start + timedelta(milliseconds=1)).isoformat()}  # fmt: skip
        assert c.get(path, params=small).status_code == 200

        def export() -> bytes:
            body = bytearray()
            with c.stream("GET", path, params={"format": fmt, "run_id": bench.run_id}) as r:
                assert r.status_code == 200, r.read()
                for chunk in r.iter_bytes():
                    body += chunk
            return bytes(body)

        growth, blob = _growth_mb(cloud, export)
    assert growth < MAX_GROWTH_MB, f"the API grew by {growth:.0f} MB during the {fmt} export"
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(blob))
        assert pq.ParquetFile(io.BytesIO(blob)).num_row_groups > 1  # written as it went
    else:
        table = pa.ipc.open_stream(blob).read_all()
    with psycopg.connect(libpq(pg_url)) as conn:
        ts, raw, value = zip(*conn.execute(
            "SELECT ts, raw_value, value FROM telemetry_readings WHERE run_id = %s"
            " ORDER BY ts, id", (bench.run_id,)).fetchall(), strict=True)  # fmt: skip
    assert table.num_rows == n
    assert table.column("timestamp").to_pylist() == list(ts)
    assert table.column("raw_value").to_pylist() == list(raw)
    assert table.column("value").to_pylist() == list(value)
    assert set(table.column("run_id").to_pylist()) == {bench.run_id}


def _busy_sessions(pg_url: str, older_than_s: float = 0.0) -> list[tuple[str, str]]:
    """The database's sessions that are not idle (a transaction open, or a query running),
    in it for more than ``older_than_s``: the server's periodic tasks (the stale-alarm clock,
    the webhook deliverer) open short transactions of their own every second or so, which a
    poll may meet; an export that holds its transaction is older than any of them."""
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        return conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state <> 'idle'"
            " AND coalesce(xact_start, query_start) < now() - make_interval(secs => %s)",
            (older_than_s,),
        ).fetchall()


def test_an_abandoned_export_gives_its_connection_back(
    served: tuple[CloudServer, Bench], pg_url: str
) -> None:
    cloud, bench = served
    store_readings(pg_url, bench, 100_000, datetime.now(UTC) - timedelta(minutes=5))
    with (
        bench.client() as c,
        c.stream("GET", "/api/v1/telemetry/export.csv", params={"run_id": bench.run_id}) as r,
    ):
        assert r.status_code == 200
        next(r.iter_bytes())  # the client reads the first chunk and goes away
    deadline = time.monotonic() + 10
    while (busy := _busy_sessions(pg_url, older_than_s=1)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert busy == [], busy
    assert cloud.proc is not None and cloud.proc.poll() is None


def test_a_client_that_stops_reading_does_not_hold_a_transaction(
    pg_url: str, tmp_path: Path
) -> None:
    env = {"BENCHLINK_EXPORT_STALL_TIMEOUT_S": "3"}
    with CloudServer(pg_url, env=env, log_path=tmp_path / "cloud.log") as cloud:
        bench = bootstrap(cloud.url)
        store_readings(pg_url, bench, N, datetime.now(UTC) - timedelta(minutes=5))
        with (
            bench.client() as c,
            c.stream("GET", "/api/v1/telemetry/export.csv", params={"run_id": bench.run_id}) as r,
        ):
            chunks = r.iter_bytes()
            got = next(chunks)
            time.sleep(1)  # the server fills the socket and waits: its cursor stands still
            assert _busy_sessions(pg_url) != []
            deadline = time.monotonic() + 15
            while (busy := _busy_sessions(pg_url, older_than_s=1)) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert busy == [], busy
            try:  # the export was cut off: it ends short, and not as if it were whole
                for chunk in chunks:
                    got += chunk
                cut_short = got.count(b"\n") < N + 1
            except httpx.HTTPError:
                cut_short = True
        assert cut_short
        assert httpx.get(cloud.url + "/readyz", timeout=5).status_code == 200


def test_metrics_max_points_is_downsampled_in_the_database(
    served: tuple[CloudServer, Bench], pg_url: str
) -> None:
    cloud, bench = served
    run, project = uuid.UUID(bench.run_id), uuid.UUID(bench.project_id)
    now = datetime.now(UTC)
    values = [1.0 / (s + 1) + (5.0 if s == 123_457 else 0.0) - (7.0 if s == 7 else 0.0)
              for s in range(N)]  # fmt: skip
    with psycopg.connect(libpq(pg_url)) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY metrics (run_id, project_id, name, step, value, ts) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "uuid", "text", "int8", "float8", "timestamptz"])
            for s, v in enumerate(values):
                copy.write_row((run, project, "loss", s, v, now))
        conn.commit()
    path = f"/api/v1/runs/{bench.run_id}/metrics"
    with bench.client() as c:
        assert c.get(path, params={"name": "loss", "max_points": 10}).status_code == 200

        def downsampled() -> dict[str, Any]:
            r = c.get(path, params={"name": "loss", "max_points": 2000})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        growth, body = _growth_mb(cloud, downsampled)
    assert growth < MAX_GROWTH_MB, f"the API grew by {growth:.0f} MB for max_points"
    assert body["downsampled"] is True
    points = body["points"]
    assert 1000 <= len(points) <= 2002
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == N - 1
    # The spikes survive: the series' min and max are among the points.
    assert max(p["value"] for p in points) == max(values)
    assert min(p["value"] for p in points) == min(values)
