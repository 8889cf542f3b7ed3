"""What ingest stores: one reading per sensor and timestamp, and only readings inside their
capture session's time (issue 13, items 2 and 4). Every test on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, inspect, text

from cloud.db import models
from cloud.db.engine import make_engine
from cloud.migrate import upgrade
from tests.cloud.conftest import Api, Identity, assert_problem
from tests.support.cloud import CloudServer, bootstrap

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


@pytest.fixture
def ids(api: Api, owner: Identity) -> dict[str, str]:
    return api.stack(owner)


def at(ms: int, raw: float, base: datetime = T0) -> dict[str, Any]:
    return {"timestamp": (base + timedelta(milliseconds=ms)).isoformat(), "raw_value": raw}


def metric(api: Api, name: str) -> float:
    for line in api.c.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def series(api: Api, who: Identity, ids: dict[str, str]) -> dict[str, Any]:
    r = api.get(
        "/api/v1/telemetry/series",
        params={"sensor_id": ids["sensor_id"], "capture_session_id": ids["capture_session_id"]},
        headers=who.headers(),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- item 2: one reading per timestamp ------------------------------------------------------


def test_the_same_reading_from_two_batches_is_stored_once_and_counted(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    published: list[int] = []
    api.services.ingest_listeners.append(lambda batch: published.append(len(batch.rows)))
    # A dense batch (summarised) and a second edge's copy of it, plus one new reading.
    first = [at(i, float(i % 7)) for i in range(400)]
    r = api.ingest(ids, first, key="edge-a-1")
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicate"]) == (400, 0)
    r = api.ingest(ids, [*first, at(400, 3.0)], key="edge-b-1")
    assert r.status_code == 202, r.text
    assert (r.json()["accepted"], r.json()["duplicate"]) == (1, 400)
    assert r.json()["first_timestamp"] == r.json()["last_timestamp"]  # the one stored
    # Its key again: the same answer, duplicates included.
    again = api.ingest(ids, [*first, at(400, 3.0)], key="edge-b-1")
    assert again.headers["idempotent-replayed"] == "true" and again.json() == r.json()
    # Only copies: nothing stored, nothing published, still an answer.
    r = api.ingest(ids, first[:10], key="edge-c-1")
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicate"]) == (0, 10)

    rows = api.readings(owner, run_id=ids["run_id"])
    assert len(rows) == 401 and len({x["timestamp"] for x in rows}) == 401
    assert published == [400, 1]  # the live stream got each reading once
    assert metric(api, "benchlink_duplicate_readings_total") == 410
    assert metric(api, "benchlink_readings_ingested_total") == 401
    # The chart's summaries count each reading once.
    chart = series(api, owner, ids)
    assert chart["total"] == 401 and sum(p["count"] for p in chart["points"]) == 401


def test_a_copy_inside_one_batch_is_dropped_and_another_value_refused(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    r = api.ingest(ids, [at(0, 1.0), at(1, 2.0), at(0, 1.0), at(2, 3.0)])
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicate"]) == (3, 1)
    body = assert_problem(
        api.ingest(ids, [at(10, 1.0), at(11, 2.0), at(10, 9.5)]), 422, "readings.2.timestamp"
    )
    assert [e["field"] for e in body["errors"]] == ["readings.2.timestamp"]
    assert (
        "readings.0" in body["errors"][0]["reason"]
        and "one reading per timestamp" in (body["errors"][0]["reason"])
    )
    assert len(api.readings(owner, run_id=ids["run_id"])) == 3  # the 422 stored nothing


def test_another_value_at_a_stored_timestamp_is_refused_with_its_reason(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    assert api.ingest(ids, [at(0, 1.0), at(1, 2.0)], key="a").status_code == 202
    # Another edge: a copy (dropped), another value at a stored timestamp (refused), a new one.
    r = api.ingest(ids, [at(0, 1.0), at(1, 2.5), at(2, 3.0)], key="b")
    body = assert_problem(r, 422, "readings.1.timestamp")
    assert [e["field"] for e in body["errors"]] == ["readings.1.timestamp"]
    assert (
        "already has a reading at this timestamp with raw_value 2.0"
        in (body["errors"][0]["reason"])
    )
    rows = api.readings(owner, run_id=ids["run_id"])
    assert [x["raw_value"] for x in rows] == [1.0, 2.0]  # nothing of the refused batch
    # What a sender does with it: set the named reading aside, send the rest again.
    r = api.ingest(ids, [at(0, 1.0), at(2, 3.0)], key="b-rest")
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicate"]) == (1, 1)
    assert [x["raw_value"] for x in api.readings(owner, run_id=ids["run_id"])] == [1.0, 2.0, 3.0]


def test_the_same_batch_posted_at_once_by_two_edges_is_stored_once(
    database_url: str, tmp_path: Path
) -> None:
    """Two senders, two keys, two API workers, at the same moment: the database decides."""
    rounds, n = 6, 300
    with CloudServer(database_url, workers=2, log_path=tmp_path / "server.log") as server:
        bench = bootstrap(server.url)
        base = datetime.now(UTC) - timedelta(seconds=30)
        answers: list[dict[str, Any]] = []
        failures: list[str] = []
        for k in range(rounds):
            readings = [
                {
                    "timestamp": (base + timedelta(milliseconds=k * n + i)).isoformat(),
                    "raw_value": float(i % 11),
                }
                for i in range(n)
            ]
            body = {
                "sensor_id": bench.sensor_id,
                "run_id": bench.run_id,
                "capture_session_id": bench.capture_session_id,
                "readings": readings,
            }
            gate = threading.Barrier(2)

            def post(body: dict[str, Any] = body, gate: threading.Barrier = gate) -> None:
                with httpx.Client(base_url=server.url, timeout=60) as c:
                    headers = {
                        "Authorization": f"Bearer {bench.token}",
                        "Idempotency-Key": str(uuid.uuid4()),
                    }
                    gate.wait()
                    r = c.post("/api/v1/telemetry", json=body, headers=headers)
                if r.status_code == 202:
                    answers.append(r.json())
                else:
                    failures.append(f"{r.status_code} {r.text[:300]}")

            threads = [threading.Thread(target=post) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert failures == []
        assert len(answers) == 2 * rounds
        assert all(a["accepted"] + a["duplicate"] == n for a in answers)
        assert sum(a["accepted"] for a in answers) == n * rounds
        with bench.client() as c:
            r = c.get(
                "/api/v1/telemetry/series",
                params={
                    "sensor_id": bench.sensor_id,
                    "capture_session_id": bench.capture_session_id,
                },
            )
            assert r.status_code == 200 and r.json()["total"] == n * rounds
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM telemetry_readings")).scalar()
            batches = conn.execute(text("SELECT sum(count) FROM telemetry_batches")).scalar()
    finally:
        engine.dispose()
    assert stored == batches == n * rounds


def test_the_migration_reports_readings_it_cannot_make_unique(database_url: str) -> None:
    """A database holding two readings of one sensor at one timestamp: the upgrade says so,
    names them and changes nothing; once they are removed it goes through."""
    url = database_url  # at the head: go back to before the unique index
    from cloud.migrate import downgrade

    downgrade(url, "0005")
    sensor = uuid.uuid4()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for ms, raw in ((0, 1.0), (0, 1.0), (1, 2.0), (1, 2.5), (2, 3.0)):
                p = uuid.uuid4()
                conn.execute(
                    insert(models.TelemetryReading.__table__),
                    {
                        "project_id": p,
                        "sensor_id": sensor,
                        "run_id": p,
                        "capture_session_id": p,
                        "batch_id": 1,
                        "ts": T0 + timedelta(milliseconds=ms),
                        "raw_value": raw,
                        "value": raw,
                        "profile_version": "v1",
                        "late": False,
                    },
                )
        with pytest.raises(Exception, match=r"2 \(sensor, timestamp\) pairs") as failed:
            upgrade(url)
        message = str(failed.value)
        assert "1 of the pairs disagree on raw_value" in message and str(sensor) in message
        indexes = {i["name"] for i in inspect(engine).get_indexes("telemetry_readings")}
        assert "ix_telemetry_sensor_ts" in indexes and "ux_telemetry_sensor_ts" not in indexes
        with engine.begin() as conn:  # what the message says to do
            conn.execute(
                text(
                    "DELETE FROM telemetry_readings WHERE id NOT IN"
                    " (SELECT min(id) FROM telemetry_readings GROUP BY sensor_id, ts)"
                )
            )
        upgrade(url)
        indexes = {i["name"] for i in inspect(engine).get_indexes("telemetry_readings")}
        assert "ux_telemetry_sensor_ts" in indexes and "ix_telemetry_sensor_ts" not in indexes
    finally:
        engine.dispose()


# --- item 4: readings inside their capture session ------------------------------------------


@pytest.fixture
def started_now(api: Api, owner: Identity) -> dict[str, str]:
    """A session started now, as the API starts it."""
    return api.stack(owner, started_at=None)


def session_times(api: Api, who: Identity, ids: dict[str, str]) -> dict[str, Any]:
    url = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}"
    body: dict[str, Any] = api.get(url, headers=who.headers()).json()
    return body


def test_readings_long_before_their_session_are_refused_one_by_one(
    api: Api, owner: Identity, started_now: dict[str, str]
) -> None:
    ids = started_now
    start = datetime.fromisoformat(session_times(api, owner, ids)["started_at"])
    readings = [
        {"timestamp": "2020-01-01T00:00:00Z", "raw_value": 1.0},
        {"timestamp": (start - timedelta(minutes=4)).isoformat(), "raw_value": 2.0},  # skew
        {"timestamp": (start - timedelta(minutes=6)).isoformat(), "raw_value": 3.0},
        {"timestamp": "0001-01-01T00:00:00Z", "raw_value": 4.0},
        {"timestamp": start.isoformat(), "raw_value": 5.0},
    ]
    body = assert_problem(api.ingest(ids, readings), 422)
    fields = [e["field"] for e in body["errors"]]
    assert fields == ["readings.0.timestamp", "readings.2.timestamp", "readings.3.timestamp"]
    assert all("before its capture session started" in e["reason"] for e in body["errors"])
    assert "300 s" in body["errors"][0]["reason"]
    assert api.readings(owner, run_id=ids["run_id"]) == []
    # The rest, as the edge re-sends it: accepted, and the chart spans minutes, not years.
    r = api.ingest(ids, [readings[1], readings[4]])
    assert r.status_code == 202 and r.json()["accepted"] == 2
    stored = api.readings(owner, run_id=ids["run_id"])
    assert [x["raw_value"] for x in stored] == [2.0, 5.0]


def test_the_clock_skew_tolerance_is_a_setting(database_url: str) -> None:
    from tests.cloud.conftest import make_client

    with make_client(database_url, clock_skew_tolerance_s=0) as client:
        api = Api(client)
        owner = api.project()
        ids = api.stack(owner, started_at=None)
        start = datetime.fromisoformat(session_times(api, owner, ids)["started_at"])
        early = {"timestamp": (start - timedelta(seconds=1)).isoformat(), "raw_value": 1.0}
        body = assert_problem(api.ingest(ids, [early]), 422, "readings.0.timestamp")
        assert "tolerance 0 s" in body["errors"][0]["reason"]


def test_an_ended_session_takes_late_data_from_its_start_minus_the_tolerance_to_its_stop(
    api: Api, owner: Identity, started_now: dict[str, str]
) -> None:
    ids = started_now
    start = datetime.fromisoformat(session_times(api, owner, ids)["started_at"])
    url = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}/stop"
    assert api.post(url, {"status": "succeeded"}, headers=owner.headers()).status_code == 200
    stop = datetime.fromisoformat(session_times(api, owner, ids)["stopped_at"])
    readings = [
        {"timestamp": (start - timedelta(minutes=2)).isoformat(), "raw_value": 1.0},
        {"timestamp": (start - timedelta(hours=1)).isoformat(), "raw_value": 2.0},
        {"timestamp": stop.isoformat(), "raw_value": 3.0},
        {"timestamp": (stop + timedelta(seconds=1)).isoformat(), "raw_value": 4.0},
    ]
    body = assert_problem(api.ingest(ids, readings), 422)
    assert [e["field"] for e in body["errors"]] == ["readings.1.timestamp", "readings.3.timestamp"]
    r = api.ingest(ids, [readings[0], readings[2]])
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["late"]) == (2, 2)


@pytest.mark.parametrize(
    "stamp",
    [
        1764936000,  # seconds since 1970
        1764936000.25,
        "1764936000",
        "2026-12-05T10:00Z",  # no seconds
        "2026-12-05T10:00:00",  # naive
        "2026-12-05",
    ],
)
def test_a_timestamp_is_rfc3339_text_with_a_zone(
    api: Api, owner: Identity, ids: dict[str, str], stamp: object
) -> None:
    body = assert_problem(
        api.ingest(ids, [at(0, 1.0), {"timestamp": stamp, "raw_value": 2.0}]),
        422,
        "readings.1.timestamp",
    )
    assert "RFC 3339" in str(body) or "timezone" in str(body)
    # The reason as written for people, without pydantic's "Value error, " in front.
    assert body["errors"][0]["reason"].startswith("must be RFC 3339"), body
    assert "Value error" not in body["detail"]
    assert api.readings(owner, run_id=ids["run_id"]) == []


def test_a_session_of_recorded_data_starts_when_the_recording_did(
    api: Api, owner: Identity
) -> None:
    run_id = api.run(owner, api.experiment(owner))
    base = f"/api/v1/runs/{run_id}/capture-sessions"
    began = datetime.now(UTC) - timedelta(hours=2)
    future = {
        "ordinal_number": 1,
        "started_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    assert_problem(api.post(base, future, headers=owner.headers()), 422, "started_at")
    draft = {"ordinal_number": 1, "status": "draft", "started_at": began.isoformat()}
    assert_problem(api.post(base, draft, headers=owner.headers()), 422, "started_at")
    r = api.post(
        base, {"ordinal_number": 1, "started_at": began.isoformat()}, headers=owner.headers()
    )
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["started_at"]) == began
    sensor_id, token = api.sensor(owner)
    ids = {
        "sensor_id": sensor_id,
        "token": token,
        "run_id": run_id,
        "capture_session_id": r.json()["id"],
    }
    recorded = [at(0, 1.0, began), at(60_000, 2.0, began)]
    assert api.ingest(ids, recorded).json()["accepted"] == 2
