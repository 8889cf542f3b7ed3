"""A large run exported as Parquet through the real API over real PostgreSQL, read back into
pandas with the database's values exactly, while the API's memory stays flat.

The readings go straight into PostgreSQL by binary COPY (what ingest stores), then the
server's Parquet export is read to a file and the API process's peak RSS (from /proc) is
compared with its RSS before. ``make test`` runs it with 500,000 readings: storing and
exporting ten million takes many minutes on a loaded machine. The ten-million run is the same
test with ``BENCHLINK_ROUNDTRIP_READINGS=10000000`` (bench/README.md: the export_columnar row
measures its rate)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest

from bench.harness import PeakRss, libpq
from bench.ingest import store_readings
from tests.support.cloud import Bench, CloudServer, bootstrap

pytestmark = pytest.mark.postgres

N = int(os.environ.get("BENCHLINK_ROUNDTRIP_READINGS", "500000"))
#: The issue's target for the API during an export of any size.
MAX_GROWTH_MB = 100


@pytest.fixture
def served(pg_url: str, tmp_path: Path) -> Iterator[tuple[CloudServer, Bench]]:
    with CloudServer(pg_url, log_path=tmp_path / "cloud.log") as cloud:
        yield cloud, bootstrap(cloud.url)


def _bits_sum(values: np.ndarray) -> int:
    """The sum of the float64s' bit patterns as signed 64-bit integers, exactly: equal sums
    of the same count mean the same values, to the last bit (a float sum would round)."""
    bits = values.astype(np.float64).view(np.int64)
    return int((bits >> 32).sum()) * 2**32 + int((bits & 0xFFFFFFFF).sum())


def _database(pg_url: str, run_id: str) -> dict[str, int]:
    """The same figures computed by PostgreSQL from its rows."""
    bits = "('x' || encode(float8send({}), 'hex'))::bit(64)::bigint"
    with psycopg.connect(libpq(pg_url)) as conn:
        row = conn.execute(
            "SELECT count(*),"
            f" sum({bits.format('value')}), sum({bits.format('raw_value')}),"
            " (extract(epoch FROM min(ts)) * 1000000)::bigint,"
            " (extract(epoch FROM max(ts)) * 1000000)::bigint,"
            " sum((extract(epoch FROM ts) * 1000000)::bigint"
            "     - (SELECT (extract(epoch FROM min(ts)) * 1000000)::bigint"
            "        FROM telemetry_readings WHERE run_id = %s))"
            " FROM telemetry_readings WHERE run_id = %s",
            (run_id, run_id),
        ).fetchone()
    assert row is not None
    keys = ("count", "value", "raw_value", "first_us", "last_us", "offsets_us")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def _file(path: Path) -> dict[str, int]:
    """Count, bit sums, first and last timestamp and the sum of the timestamps' offsets
    from the first, a row group at a time through pandas (as a notebook would read it, in
    the memory of one group); the timestamps must never go back."""
    f = pq.ParquetFile(path)
    out = {"count": 0, "value": 0, "raw_value": 0, "offsets_us": 0}
    first = last = None
    for g in range(f.num_row_groups):
        df = f.read_row_group(g, columns=["timestamp", "value", "raw_value"]).to_pandas()
        assert str(df["timestamp"].dt.tz) == "UTC"
        us = df["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[us]").view(np.int64)
        if first is None:
            first = int(us[0])
        assert (np.diff(us) >= 0).all() and (last is None or us[0] >= last), g
        last = int(us[-1])
        out["count"] += len(df)
        out["value"] += _bits_sum(df["value"].to_numpy())
        out["raw_value"] += _bits_sum(df["raw_value"].to_numpy())
        out["offsets_us"] += int((us - first).sum())
    assert first is not None and last is not None
    return {**out, "first_us": first, "last_us": last}


def test_a_large_parquet_export_round_trips_with_flat_api_memory(
    served: tuple[CloudServer, Bench], pg_url: str, tmp_path: Path
) -> None:
    cloud, bench = served
    start = datetime.now(UTC) - timedelta(hours=2)
    store_readings(pg_url, bench, N, start)
    path = "/api/v1/telemetry/export"
    target = tmp_path / "run.parquet"
    assert cloud.proc is not None
    rss = PeakRss(cloud.proc.pid)
    with bench.client() as c:
        c.timeout = httpx.Timeout(3600)
        # Warm the route's code, its imports and connections with a small export.
        small = {"format": "parquet", "run_id": bench.run_id,
                 "until": (start + timedelta(milliseconds=1)).isoformat()}  # fmt: skip
        assert c.get(path, params=small).status_code == 200
        rss.reset()
        before = rss.mb
        with (
            c.stream("GET", path, params={"format": "parquet", "run_id": bench.run_id}) as r,
            target.open("wb") as out,
        ):
            assert r.status_code == 200, r.read()
            assert r.headers["benchlink-rows"] == str(N)
            for chunk in r.iter_bytes():
                out.write(chunk)
                rss.sample()
        growth = rss.mb - before
    assert growth < MAX_GROWTH_MB, f"the API grew by {growth:.0f} MB exporting {N:,} readings"

    meta = pq.read_schema(target).metadata or {}
    assert bench.run_id.encode() in meta[b"benchlink"]  # the file names its run
    assert pq.ParquetFile(target).num_row_groups > 1  # written as it went
    got, want = _file(target), _database(pg_url, bench.run_id)
    assert want["count"] == N
    assert got == want
    print(f"\n{N:,} readings: {target.stat().st_size / 1e6:.1f} MB, API RSS {growth:+.0f} MB")
