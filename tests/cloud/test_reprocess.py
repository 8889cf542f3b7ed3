"""Reprocessing a sensor's history under another profile version (``POST
/sensors/{id}/reprocess``, ``/jobs/{id}``), on SQLite and PostgreSQL: every value re-derived
once, the first values still readable, reads (page, chart, CSV) under the version asked for,
cancel, and ingest going on beside a job. The kill -9 of a real API process in the middle of
a job is in ``test_reprocess_kill.py``.

``BENCHLINK_REPROCESS_READINGS`` sets the size of the run reprocessed (default 100,000; the
long form: 1,000,000)."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from cloud.db.models import ReprocessedValue, ReprocessJob
from tests.cloud.conftest import Api, Identity, assert_problem, make_client

N = int(os.environ.get("BENCHLINK_REPROCESS_READINGS", "100000"))
START = datetime(2025, 3, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=1)
V1 = {"version": "v1", "kind": "linear", "payload": {"a": 2.0, "b": 1.0}}
V2 = {"version": "v2", "kind": "linear", "payload": {"a": 2.5, "b": -4.0}}
V3 = {"version": "v3", "kind": "polynomial", "payload": {"coefficients": [-3.0, 1.5, 0.01]}}


def raw(i: int) -> float:
    return 1.0 + (i % 997) * 0.01


def first(i: int, mid: int) -> tuple[float, str]:
    """A reading's value as ingest derived it: v1 before ``mid``, v2 from then on."""
    r = raw(i)
    return (2.0 * r + 1.0, "v1") if i < mid else (2.5 * r - 4.0, "v2")


def under_v3(r: float) -> float:
    return -3.0 + 1.5 * r + 0.01 * r * r  # v3, computed here, not by the converter


def _ingest(api: Api, ids: dict[str, str], lo: int, hi: int) -> None:
    for a in range(lo, hi, 5000):
        readings = [
            {"timestamp": (START + STEP * i).isoformat(), "raw_value": raw(i)}
            for i in range(a, min(a + 5000, hi))
        ]
        r = api.ingest(ids, readings)
        assert r.status_code == 202, r.text


def _history(api: Api, who: Identity, n: int) -> tuple[dict[str, str], int]:
    """A run of ``n`` readings: v1 until the middle, v2 (effective from a time) after it,
    then v3 set now; the index of the first reading under v2."""
    ids = api.stack(who)
    mid = n // 2
    body = {**V2, "effective_from": (START + STEP * mid).isoformat()}
    r = api.put(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile", body, headers=who.headers()
    )
    assert r.status_code == 200, r.text
    _ingest(api, ids, 0, n)
    r = api.put(f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile", V3, headers=who.headers())
    assert r.status_code == 200, r.text
    return ids, mid


def _reprocess(
    api: Api, who: Identity, sensor: str, body: dict[str, Any], headers: Any = None
) -> Any:
    h = {**who.headers(), **(headers or {})}
    r = api.post(f"/api/v1/sensors/{sensor}/reprocess", body, headers=h)
    assert r.status_code == 202, r.text
    return r


def _wait(api: Api, who: Identity, job: str, until: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/api/v1/jobs/{job}", headers=who.headers())
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def _ended(body: dict[str, Any]) -> bool:
    return body["status"] not in ("queued", "running")


def _pages(api: Api, who: Identity, **params: str) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        q = {**params, "limit": "10000", **({"cursor": cursor} if cursor else {})}
        r = api.get("/api/v1/telemetry", params=q, headers=who.headers())
        assert r.status_code == 200, r.text
        yield from r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return


def _index(reading: dict[str, Any]) -> int:
    return round((datetime.fromisoformat(reading["timestamp"]) - START) / STEP)


def _csv(api: Api, who: Identity, **params: str) -> list[dict[str, str]]:
    r = api.get("/api/v1/telemetry/export.csv", params=params, headers=who.headers())
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def _chart(api: Api, who: Identity, sensor: str, **params: str) -> dict[str, Any]:
    q = {"sensor_id": sensor, "max_points": "500", **params}
    r = api.get("/api/v1/telemetry/series", params=q, headers=who.headers())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _stored(api: Api, model: Any, *where: Any) -> int:
    with api.services.sessionmaker() as db:
        return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.mark.timeout(300 + N // 250)  # ~2 min a database at 100,000 on the shared machine
def test_a_run_reprocessed_under_v3_reads_under_any_version(api: Api) -> None:
    who = api.project()
    ids, mid = _history(api, who, N)
    sensor = ids["sensor_id"]
    before = _chart(api, who, sensor, run_id=ids["run_id"])
    assert before["profile_version"] == "v3" and before["total"] == N

    job = _reprocess(api, who, sensor, {"profile_version": "v3", "run_id": ids["run_id"]}).json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert job["progress"]["total"] == N and job["sensor_id"] == sensor
    done = _wait(api, who, job["id"], _ended)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"done": N, "total": N}
    assert (done["converted"], done["unchanged"], done["unconvertible"]) == (N, 0, 0)
    assert done["from_versions"] == ["v1", "v2"]
    assert done["started_at"] and done["finished_at"] and done["error"] is None
    # Each reading converted once, by this job: one stored value each.
    assert _stored(api, ReprocessedValue, ReprocessedValue.job_id == uuid.UUID(job["id"])) == N

    # The default is the sensor's current version, v3: every value, each saying so.
    seen = 0
    for r in _pages(api, who, run_id=ids["run_id"]):
        i = _index(r)
        assert r["raw_value"] == raw(i) and r["profile_version"] == "v3"
        assert r["value"] == pytest.approx(under_v3(raw(i)), rel=1e-12, abs=1e-12)
        seen += 1
    assert seen == N
    # The values as first derived are still there: v1 (and v2 where it was effective).
    firsts = list(_pages(api, who, sensor_id=sensor, profile_version="v1"))
    assert len(firsts) == N
    for r in firsts:
        value, version = first(_index(r), mid)
        assert (r["value"], r["profile_version"]) == (pytest.approx(value), version)

    # The chart follows the version asked for: v1 is the chart as it was, from the
    # summaries; v3 (the default) is v3's values.
    assert (
        _chart(api, who, sensor, run_id=ids["run_id"], profile_version="v1")["points"]
        == (before["points"])
    )
    chart = _chart(api, who, sensor, run_id=ids["run_id"])
    assert chart["profile_version"] == "v3" and chart["total"] == N and chart["downsampled"]
    want = [under_v3(raw(i)) for i in range(N)]
    assert min(p["min"] for p in chart["points"]) == pytest.approx(min(want))
    assert max(p["max"] for p in chart["points"]) == pytest.approx(max(want))
    total = sum(p["value"] * p["count"] for p in chart["points"])
    assert total == pytest.approx(sum(want), rel=1e-9)
    assert chart != before

    # CSV: v3 by default, the first values under ?profile_version=v1.
    rows = _csv(api, who, run_id=ids["run_id"])
    assert len(rows) == N
    for k, row in enumerate(rows):
        assert row["profile_version"] == "v3" and row["value_unit"] == "°C"
        assert float(row["value"]) == pytest.approx(under_v3(raw(k)), rel=1e-12, abs=1e-12)
    rows = _csv(api, who, run_id=ids["run_id"], profile_version="v1")
    for k, row in enumerate(rows):
        value, version = first(k, mid)
        assert (float(row["value"]), row["profile_version"]) == (pytest.approx(value), version)

    # The journal: started and finished, with counts, versions, range and who.
    r = api.get("/api/v1/events", params={"run_id": ids["run_id"]}, headers=who.headers())
    events = {e["kind"]: e for e in r.json()["items"]}
    started = events["telemetry.reprocess_started"]
    assert started["actor"] == f"user:{who.user_id}"
    assert started["payload"]["total"] == N and started["payload"]["profile_version"] == "v3"
    finished = events["telemetry.reprocess_finished"]["payload"]
    assert finished["status"] == "succeeded" and finished["converted"] == N
    assert finished["from_versions"] == ["v1", "v2"]
    assert finished["requested_by"] == who.user_id
    assert finished["first_timestamp"] and finished["last_timestamp"]


def _slow(database_url: str, pause_s: float = 0.02) -> Any:
    """An API whose jobs go a chunk of 500 readings every ``pause_s``: long enough to act on."""
    return make_client(database_url, reprocess_chunk=500, reprocess_pause_s=pause_s)


def test_cancel_leaves_each_reading_with_one_coherent_version(database_url: str) -> None:
    with _slow(database_url) as client:
        api = Api(client)
        who = api.project()
        ids, mid = _history(api, who, 20_000)
        sensor = ids["sensor_id"]
        job = _reprocess(api, who, sensor, {"profile_version": "v3"}).json()
        _wait(api, who, job["id"], lambda b: b["progress"]["done"] >= 2000)
        r = api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=who.headers())
        assert r.status_code == 200, r.text
        cancelled = r.json()
        assert cancelled["status"] == "cancelled" and cancelled["cancelled_by"] == who.user_id
        reached, got = cancelled["progress"]["done"], cancelled["cursor"]
        assert 2000 <= reached < 20_000 and got is not None
        time.sleep(0.3)  # the runner's next chunk, if it were to store one
        again = api.get(f"/api/v1/jobs/{job['id']}", headers=who.headers()).json()
        assert again == cancelled
        assert (
            _stored(api, ReprocessedValue, ReprocessedValue.job_id == uuid.UUID(job["id"]))
            == reached
        )
        # Up to where it got: v3; after it: the first values. Nothing in between.
        cut = datetime.fromisoformat(got)
        for r in _pages(api, who, sensor_id=sensor):
            ts, i = datetime.fromisoformat(r["timestamp"]), _index(r)
            if ts <= cut:
                assert r["profile_version"] == "v3"
                assert r["value"] == pytest.approx(under_v3(raw(i)))
            else:
                value, version = first(i, mid)
                assert (r["value"], r["profile_version"]) == (pytest.approx(value), version)
        # Cancelling what ended changes nothing.
        r = api.post(f"/api/v1/jobs/{job['id']}/cancel", headers=who.headers())
        assert r.status_code == 200 and r.json() == cancelled
        events = api.get("/api/v1/events", headers=who.headers()).json()["items"]
        finished = [e for e in events if e["kind"] == "telemetry.reprocess_finished"]
        assert len(finished) == 1 and finished[0]["payload"]["status"] == "cancelled"
        assert finished[0]["payload"]["done"] == reached
        assert finished[0]["actor"] == f"user:{who.user_id}"


def test_ingest_goes_on_while_a_job_runs(database_url: str) -> None:
    with _slow(database_url) as client:
        api = Api(client)
        who = api.project()
        ids, _ = _history(api, who, 20_000)
        job = _reprocess(api, who, ids["sensor_id"], {"profile_version": "v3"}).json()
        _wait(api, who, job["id"], lambda b: b["status"] != "queued")
        during, i = 0, 20_000
        while True:
            state = api.get(f"/api/v1/jobs/{job['id']}", headers=who.headers()).json()
            if state["status"] != "running":
                break
            t0 = time.monotonic()
            _ingest(api, ids, i, i + 200)
            assert time.monotonic() - t0 < 5, "ingest waited for the job"
            i += 200
            during += 1
        assert state["status"] == "succeeded" and during >= 5, (state, during)
        assert state["progress"] == {"done": 20_000, "total": 20_000}
        # What arrived during the job was converted at ingest (v3 is effective now... for
        # readings stamped from when it was set; these are stamped in 2025: v2's).
        late = [r for r in _pages(api, who, sensor_id=ids["sensor_id"]) if _index(r) >= 20_000]
        assert len(late) == i - 20_000
        assert all(r["profile_version"] == "v2" for r in late)


def test_refusals(database_url: str) -> None:
    with _slow(database_url, pause_s=0.2) as client:
        api = Api(client)
        who = api.project()
        ids, _ = _history(api, who, 10_000)
        sensor = ids["sensor_id"]
        url = f"/api/v1/sensors/{sensor}/reprocess"
        r = api.post(url, {"profile_version": "v9"}, headers=who.headers())
        assert_problem(r, 422, "profile_version")
        body = {"profile_version": "v3", "since": "2025-03-02T00:00:00Z"}
        r = api.post(url, {**body, "until": "2025-03-01T00:00:00Z"}, headers=who.headers())
        assert_problem(r, 422, "until")
        r = api.post(
            url, {"profile_version": "v3", "run_id": str(uuid.uuid4())}, headers=who.headers()
        )
        assert_problem(r, 404)
        r = api.post(url, {"profile_version": "v3"}, headers=who.headers("viewer"))
        assert_problem(r, 403)
        # Idempotency-Key: the same job again, not a second one.
        key = {"Idempotency-Key": f"re-{uuid.uuid4()}"}
        first_job = _reprocess(api, who, sensor, {"profile_version": "v3"}, headers=key).json()
        r = api.post(url, {"profile_version": "v3"}, headers={**who.headers(), **key})
        assert r.status_code == 202 and r.headers["Idempotent-Replayed"] == "true"
        assert r.json()["id"] == first_job["id"]
        # Another request while it runs: 409 naming it.
        r = api.post(url, {"profile_version": "v3"}, headers=who.headers())
        assert first_job["id"] in assert_problem(r, 409)["detail"]
        assert _stored(api, ReprocessJob, ReprocessJob.sensor_id == uuid.UUID(sensor)) == 1
        # Reads of a version the sensor does not have.
        r = api.get(
            "/api/v1/telemetry",
            params={"sensor_id": sensor, "profile_version": "v9"},
            headers=who.headers(),
        )
        assert_problem(r, 422, "profile_version")
        r = api.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=who.headers())
        assert_problem(r, 404)
        other = api.project("other")
        r = api.get(f"/api/v1/jobs/{first_job['id']}", headers=other.headers())
        assert_problem(r, 404)
        api.post(f"/api/v1/jobs/{first_job['id']}/cancel", headers=who.headers())


def test_no_reading_in_scope_succeeds_at_once(api: Api) -> None:
    who = api.project()
    ids, _ = _history(api, who, 100)
    body = {"profile_version": "v3", "since": "2026-01-01T00:00:00Z"}
    job = _reprocess(api, who, ids["sensor_id"], body).json()
    assert job["progress"] == {"done": 0, "total": 0}
    done = _wait(api, who, job["id"], _ended, timeout=30)
    assert done["status"] == "succeeded" and done["converted"] == 0
    assert json.loads(json.dumps(done["from_versions"])) == []


def test_a_sensors_jobs_are_listed_newest_first_for_every_viewer(api: Api) -> None:
    who = api.project()
    ids, _ = _history(api, who, 40)
    other, _ = _history(api, who, 10)  # another sensor's job is not in the list
    _wait(
        api,
        who,
        _reprocess(api, who, other["sensor_id"], {"profile_version": "v2"}).json()["id"],
        _ended,
        60,
    )
    first = _reprocess(api, who, ids["sensor_id"], {"profile_version": "v2"}).json()["id"]
    _wait(api, who, first, _ended, timeout=60)
    second = _reprocess(api, who, ids["sensor_id"], {"profile_version": "v3"}).json()["id"]
    _wait(api, who, second, _ended, timeout=60)

    path = f"/api/v1/sensors/{ids['sensor_id']}/jobs"
    viewer = who.headers("viewer")
    page = api.get(path, headers=viewer).json()
    assert [j["id"] for j in page["items"]] == [second, first] and page["next_cursor"] is None
    assert [j["profile_version"] for j in page["items"]] == ["v3", "v2"]
    one = api.get(path, params={"limit": 1}, headers=viewer).json()
    rest = api.get(path, params={"limit": 1, "cursor": one["next_cursor"]}, headers=viewer)
    assert [j["id"] for j in one["items"] + rest.json()["items"]] == [second, first]
    running = api.get(path, params={"status": "running"}, headers=viewer).json()
    assert running["items"] == []
    assert_problem(api.get(path, params={"status": "done"}, headers=viewer), 422, field="status")
    stranger = api.project()
    assert_problem(api.get(path, headers=stranger.headers()), 404)
