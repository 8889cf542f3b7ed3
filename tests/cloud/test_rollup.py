"""Summaries kept at ingest (cloud/services/telemetry_rollup.py): which level a batch is
summarised from, the cells it adds, and migration 0004 (batches stored before it are in no
summary, and charts over them stay right), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cloud.db.engine import make_engine
from cloud.migrate import downgrade, upgrade
from cloud.services.telemetry_rollup import (
    NOT_ROLLED,
    SPARSE_FLOOR,
    WIDTHS_US,
    floor_level,
    summarise,
)
from tests.support.cloud import CloudServer, backdate, bootstrap


def brute(stamps: list[int], values: list[float], level: int) -> list[tuple[int, ...]]:
    """The cells of ``level``, brute force: (level, cell, n, sum, min, max) by cell."""
    cells: dict[int, list[float]] = {}
    for u, v in zip(stamps, values, strict=True):
        cells.setdefault(u // WIDTHS_US[level], []).append(v)
    return [(level, c, len(vs), sum(vs), min(vs), max(vs)) for c, vs in sorted(cells.items())]


def test_floor_level_is_the_finest_dense_one() -> None:
    t0 = 1_794_999_600_000_000  # a whole hour in us since the epoch
    assert t0 % WIDTHS_US[-1] == 0
    thousand_hz = [t0 + 1000 * i for i in range(1000)]
    assert floor_level(thousand_hz) == 0  # 10 a 10 ms cell
    assert floor_level([t0 + 100_000 * i for i in range(1000)]) == 2  # 10 Hz: 10 a second
    assert floor_level([t0 + 1_000_000 * i for i in range(1000)]) == 3  # 1 Hz: 10 per 10 s
    # Four readings in one cell are enough; three are not, nor is one: those are summarised
    # from a minute up, where a slow sensor's batches share cells.
    assert floor_level([t0, t0 + 1, t0 + 2, t0 + 3]) == 0
    assert floor_level([t0, t0 + 1, t0 + 2]) == SPARSE_FLOOR
    assert floor_level([t0]) == SPARSE_FLOOR
    assert floor_level([t0 + 3_600_000_000 * i for i in range(100)]) == SPARSE_FLOOR
    # Four readings straddling a 10 ms edge span two cells there: dense only at 100 ms.
    assert floor_level([t0 + 9_998, t0 + 9_999, t0 + 10_000, t0 + 10_001]) == 1


@pytest.mark.parametrize("shuffle", [False, True])
def test_summarise_matches_brute_force(shuffle: bool) -> None:
    rng = random.Random(7)
    t0 = 1_794_999_600_000_000 + 3_599_000_000  # a second before an hour's edge
    stamps = sorted(t0 + rng.randrange(2_000_000) for _ in range(600))
    values = [rng.randrange(-400, 400) / 4 for _ in stamps]
    if shuffle:  # out of time order: the slower path, the same cells
        order = list(range(len(stamps)))
        rng.shuffle(order)
        stamps, values = [stamps[i] for i in order], [values[i] for i in order]
    level, cells = summarise(stamps, values)
    assert level == floor_level(stamps) == 1
    expected = [cell for lv in range(level, len(WIDTHS_US)) for cell in brute(stamps, values, lv)]
    assert cells == expected
    # Crossing the hour: two cells at every level, from 10 s up.
    assert [c[1] for c in cells if c[0] == len(WIDTHS_US) - 1] == [
        t0 // WIDTHS_US[-1],
        t0 // WIDTHS_US[-1] + 1,
    ]


def test_a_sparse_batch_is_summarised_from_a_minute_up() -> None:
    stamps, values = [1_000_000, 90_000_000_000], [1.0, 2.0]
    level, cells = summarise(stamps, values)
    assert level == SPARSE_FLOOR == 4
    assert cells == [c for lv in (4, 5, 6) for c in brute(stamps, values, lv)]


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def test_batches_from_before_the_migration_are_charted_from_their_readings(
    database_url: str, tmp_path: Path
) -> None:
    url = database_url  # migrated to the head: 0004 included
    base = datetime.now(UTC) - timedelta(minutes=10)

    def batch(c: httpx.Client, first: int) -> None:
        readings = [
            {
                "timestamp": (base + timedelta(milliseconds=first + i)).isoformat(),
                "raw_value": float((first + i) % 17),
            }
            for i in range(1000)
        ]
        r = c.post(
            "/api/v1/telemetry",
            json={**ids, "readings": readings},
            headers={"Authorization": f"Bearer {bench.token}"},
        )
        assert r.status_code == 202, r.text

    def chart(server: CloudServer) -> dict[str, object]:
        with bench.client() as c:
            c.base_url = httpx.URL(server.url)
            r = c.get(
                "/api/v1/telemetry/series",
                params={
                    "sensor_id": bench.sensor_id,
                    "capture_session_id": bench.capture_session_id,
                    "max_points": 40,
                },
            )
            assert r.status_code == 200, r.text
            body: dict[str, object] = r.json()
            return body

    with CloudServer(url, log_path=tmp_path / "server.log") as server:
        bench = bootstrap(server.url)
        backdate(url, bench.capture_session_id, base)
        ids = {
            "sensor_id": bench.sensor_id,
            "run_id": bench.run_id,
            "capture_session_id": bench.capture_session_id,
        }
        with bench.client() as c:
            for first in (0, 1000, 2000):
                batch(c, first)
        before = chart(server)
    assert before["total"] == 3000
    assert _rows(url, "SELECT DISTINCT rollup_level FROM telemetry_batches") == [(0,)]
    downgrade(url, "0003")
    upgrade(url)
    # Nothing is rewritten: the old batches are in no summary, and the summaries are empty.
    assert _rows(url, "SELECT DISTINCT rollup_level FROM telemetry_batches") == [(NOT_ROLLED,)]
    assert _rows(url, "SELECT count(*) FROM telemetry_rollups") == [(0,)]
    with CloudServer(url, log_path=tmp_path / "server2.log") as server:
        assert chart(server) == before
        with bench.client() as c:
            c.base_url = httpx.URL(server.url)
            batch(c, 3000)
        after = chart(server)
    assert after["total"] == 4000
    # The new batch is summarised; the old ones are read from their readings beside it.
    assert _rows(url, "SELECT rollup_level FROM telemetry_batches ORDER BY id") == [
        (NOT_ROLLED,),
        (NOT_ROLLED,),
        (NOT_ROLLED,),
        (0,),
    ]
    points, earlier = after["points"], before["points"]
    assert isinstance(points, list) and isinstance(earlier, list)
    assert sum(p["count"] for p in points) == 4000
    assert max(p["max"] for p in points) == max(p["max"] for p in earlier) == 16.0
