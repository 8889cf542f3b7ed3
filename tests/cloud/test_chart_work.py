"""What a chart or a first page of readings costs the database: the readings it reads, not
the readings stored.

Every statement the request runs is recorded, then run again on the same database to see
its plan. On PostgreSQL, EXPLAIN ANALYZE counts the index entries and rows of
telemetry_readings each plan went through; on SQLite, EXPLAIN QUERY PLAN must show no sort of
readings (an order the index does not give means reading every reading of the filter
first). The database is as ingest leaves it: nothing vacuumed or analysed, as for a session
just recorded, when the planner knows nothing of how many readings there are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import Table, event
from sqlalchemy.engine import Engine

from cloud.db import models
from cloud.db.engine import make_engine
from tests.cloud.conftest import Api, Identity

#: The indexes of telemetry_readings (a bitmap index scan names no table).
INDEXES = {str(i.name) for i in cast(Table, models.TelemetryReading.__table__).indexes} | {
    "pk_telemetry_readings"
}
START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
#: Per sensor: 20 s at 1 kHz, two sensors in the session.
READINGS = 20_000
MAX_POINTS = 100
PAGE = 100


@pytest.fixture
def recorded(api: Api) -> dict[str, Any]:
    owner = api.project()
    ids = api.stack(owner)
    other, token = api.sensor(owner)
    for lo in range(0, READINGS, 1000):
        stamps = [START + timedelta(milliseconds=i) for i in range(lo, lo + 1000)]
        for sensor in (ids, {**ids, "sensor_id": other, "token": token}):
            body = [{"timestamp": t.isoformat(), "raw_value": float(i % 7)} for i, t in
                    enumerate(stamps)]  # fmt: skip
            assert api.ingest(sensor, body).status_code == 202
    return {"owner": owner, "ids": ids}


@contextmanager
def statements() -> Iterator[list[tuple[str, Any]]]:
    """Every statement any engine of this process runs meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def _readings_touched(plan: dict[str, Any]) -> int:
    """Index entries and rows of telemetry_readings that a plan node and its children went
    through (rows a filter removed included)."""
    here = 0
    if plan.get("Relation Name") == "telemetry_readings" or plan.get("Index Name") in INDEXES:
        removed = plan.get("Rows Removed by Filter", 0) + plan.get(
            "Rows Removed by Index Recheck", 0
        )
        here = (plan["Actual Rows"] + removed) * plan["Actual Loops"]
    return here + sum(_readings_touched(p) for p in plan.get("Plans", []))


def _is_select(statement: str) -> bool:
    # A UNION of parenthesised SELECTs (each with its own LIMIT) starts with "(".
    return statement.lstrip("( \n").startswith("SELECT")


def readings_touched_pg(database_url: str, seen: list[tuple[str, Any]]) -> int:
    """Replays the request's statements in one transaction (its SET LOCALs included) and
    adds up what the plans of those that read telemetry_readings went through."""
    total = 0
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for statement, params in seen:
            if "telemetry_readings" in statement and _is_select(statement):
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
                row = cur.fetchone()
                assert row is not None
                doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
                total += _readings_touched(doc[0]["Plan"])
            elif _is_select(statement):
                cur.execute(statement, params)
        conn.rollback()
    return total


def sorts_sqlite(database_url: str, seen: list[tuple[str, Any]]) -> list[str]:
    """The plan lines of the request's reading queries that sort readings."""
    engine = make_engine(database_url)
    found = []
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            for statement, params in seen:
                if "telemetry_readings" not in statement or not _is_select(statement):
                    continue
                for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params):
                    if "TEMP B-TREE" in row[3]:
                        found.append(f"{row[3]} in {statement[:300]}")
    finally:
        engine.dispose()
    return found


def _filters(ids: dict[str, str]) -> dict[str, dict[str, str]]:
    return {
        "sensor": {"sensor_id": ids["sensor_id"]},
        "sensor + session": {
            "sensor_id": ids["sensor_id"],
            "capture_session_id": ids["capture_session_id"],
        },
        "sensor + run": {"sensor_id": ids["sensor_id"], "run_id": ids["run_id"]},
    }


WINDOW = {
    "since": (START + timedelta(seconds=5, microseconds=4321)).isoformat(),
    "until": (START + timedelta(seconds=15, microseconds=1234)).isoformat(),
}


def check(database_url: str, seen: list[tuple[str, Any]], budget: int, what: str) -> None:
    assert seen, what
    if database_url.startswith("postgresql"):
        touched = readings_touched_pg(database_url, seen)
        assert touched <= budget, f"{what}: {touched} readings read, budget {budget}"
    else:
        assert sorts_sqlite(database_url, seen) == [], what


@pytest.mark.parametrize("window", [False, True], ids=["whole", "10 s window"])
def test_a_chart_reads_what_it_draws_not_what_is_stored(
    api: Api, recorded: dict[str, Any], database_url: str, window: bool
) -> None:
    owner: Identity = recorded["owner"]
    for name, params in _filters(recorded["ids"]).items():
        q = {**params, "max_points": MAX_POINTS, **(WINDOW if window else {})}
        with statements() as seen:
            r = api.get("/api/v1/telemetry/series", params=q, headers=owner.headers())
        assert r.status_code == 200, r.text
        assert r.json()["downsampled"] and r.json()["total"] == (9_997 if window else READINGS)
        # The first and last reading, max_points + 1 counted, the two 100 ms cells since and
        # until cut: a few hundred readings of the sensor's 20,000 (and the other sensor's).
        check(database_url, seen, 4 * (MAX_POINTS + 1) + 2 * 100, f"{name}, window={window}")


@pytest.mark.parametrize(
    "fields",
    [("capture_session_id",), ("run_id",), ("sensor_id",), ("sensor_id", "capture_session_id"),
     ("sensor_id", "run_id")],
    ids="+".join,
)  # fmt: skip
def test_the_first_page_reads_the_page(
    api: Api, recorded: dict[str, Any], database_url: str, fields: tuple[str, ...]
) -> None:
    owner: Identity = recorded["owner"]
    ids = recorded["ids"]
    q = {**{f: ids[f] for f in fields}, "limit": PAGE}
    with statements() as seen:
        r = api.get("/api/v1/telemetry", params=q, headers=owner.headers())
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == PAGE
    # The page and the one after it (does a next page exist), and as many of the other
    # sensor's, interleaved in time, when the index is the run's.
    check(database_url, seen, 2 * (PAGE + 1) + 10, "+".join(fields))


@pytest.mark.parametrize(
    "fields", [("capture_session_id",), ("run_id",), ("sensor_id",)], ids=lambda f: f[0]
)
def test_a_later_page_reads_the_page(
    api: Api, recorded: dict[str, Any], database_url: str, fields: tuple[str, ...]
) -> None:
    # The tenth page starts where the ninth ended, not at the filter's first reading.
    owner: Identity = recorded["owner"]
    ids = recorded["ids"]
    q = {**{f: ids[f] for f in fields}, "limit": PAGE}
    for _ in range(9):
        r = api.get("/api/v1/telemetry", params=q, headers=owner.headers())
        q["cursor"] = r.json()["next_cursor"]
    with statements() as seen:
        r = api.get("/api/v1/telemetry", params=q, headers=owner.headers())
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == PAGE
    check(database_url, seen, 2 * (PAGE + 1) + 10, "+".join(fields))
