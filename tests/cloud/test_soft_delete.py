"""Owners delete runs and experiments softly: gone from every list and read at once, back with
``restore`` within the grace period, then purged with every row of their data (on SQLite
and PostgreSQL alike)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, create_engine, func, select

from cloud import app as cloud_app
from cloud.container import app_container
from cloud.db.models import Base
from cloud.services import purge
from tests.cloud.conftest import Api, Identity, assert_problem, make_client

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


def _readings(n: int, start: datetime = T0) -> list[dict[str, Any]]:
    return [
        {"timestamp": (start + timedelta(seconds=i)).isoformat(), "raw_value": float(i)}
        for i in range(n)
    ]


def _stop(api: Api, who: Identity, ids: dict[str, str]) -> None:
    url = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}/stop"
    r = api.post(url, {}, headers=who.headers("editor"))
    assert r.status_code == 200, r.text


def _two_runs(api: Api, who: Identity) -> tuple[dict[str, str], dict[str, str]]:
    """One sensor, one experiment, two runs each with a stopped session of 10 readings, a
    metric, an annotation; the second run's ids second."""
    a = api.stack(who)
    b = dict(a, run_id=api.run(who, a["experiment_id"]))
    b["capture_session_id"] = api.session(who, b["run_id"])
    api.backdate(b["capture_session_id"], datetime(2020, 1, 1, tzinfo=UTC))
    for ids, start in ((a, T0), (b, T0 + timedelta(hours=1))):
        assert api.ingest(ids, _readings(10, start)).status_code == 202
        metric = {"metrics": [{"name": "loss", "step": 1, "value": 0.5}]}
        assert (
            api.post(
                f"/api/v1/runs/{ids['run_id']}/metrics", metric, headers=who.headers()
            ).status_code
            == 201
        )
        note = {"start": start.isoformat(), "text": "door opened"}
        assert (
            api.post(
                f"/api/v1/runs/{ids['run_id']}/annotations", note, headers=who.headers()
            ).status_code
            == 201
        )
        _stop(api, who, ids)
    return a, b


def _sensor_total(api: Api, who: Identity, sensor_id: str) -> tuple[int, int, int, int]:
    """What a sensor's readings across runs add up to: a page, a chart (readings), a chart
    downsampled (from the summaries), an export."""
    h = who.headers("viewer")
    page = api.readings(who, sensor_id=sensor_id)
    chart = api.get("/api/v1/telemetry/series", params={"sensor_id": sensor_id}, headers=h).json()
    coarse = api.get(
        "/api/v1/telemetry/series", params={"sensor_id": sensor_id, "max_points": 2}, headers=h
    ).json()
    csv = api.get("/api/v1/telemetry/export.csv", params={"sensor_id": sensor_id}, headers=h).text
    return len(page), chart["total"], coarse["total"], len(csv.strip().splitlines()) - 1


def _run_reads(api: Api, who: Identity, ids: dict[str, str]) -> list[int]:
    h = who.headers("viewer")
    run = ids["run_id"]
    urls = [
        f"/api/v1/runs/{run}",
        f"/api/v1/runs/{run}/capture-sessions",
        f"/api/v1/runs/{run}/capture-sessions/{ids['capture_session_id']}",
        f"/api/v1/runs/{run}/metrics",
        f"/api/v1/runs/{run}/annotations",
        f"/api/v1/runs/{run}/events",
        f"/api/v1/telemetry?run_id={run}",
        f"/api/v1/telemetry?capture_session_id={ids['capture_session_id']}",
        f"/api/v1/telemetry/series?sensor_id={ids['sensor_id']}&run_id={run}",
        f"/api/v1/telemetry/export.csv?run_id={run}",
    ]
    return [api.get(u, headers=h).status_code for u in urls]


def _kinds(api: Api, who: Identity) -> list[str]:
    events = api.get("/api/v1/events", params={"limit": 1000}, headers=who.headers()).json()
    return [e["kind"] for e in events["items"]]


def test_a_deleted_run_vanishes_everywhere_and_comes_back(api: Api) -> None:
    owner = api.project()
    a, b = _two_runs(api, owner)
    exp = a["experiment_id"]
    assert _sensor_total(api, owner, a["sensor_id"]) == (20, 20, 20, 20)

    for role in ("viewer", "editor"):
        assert_problem(
            api.request("DELETE", f"/api/v1/runs/{b['run_id']}", headers=owner.headers(role)), 403
        )
    r = api.request("DELETE", f"/api/v1/runs/{b['run_id']}", headers=owner.headers())
    assert r.status_code == 200, r.text
    gone = r.json()
    assert gone["kind"] == "run" and gone["id"] == b["run_id"] and gone["experiment_id"] == exp
    purge_after = datetime.fromisoformat(gone["purge_after"])
    assert purge_after - datetime.fromisoformat(gone["deleted_at"]) == timedelta(days=7)

    assert set(_run_reads(api, owner, b)) == {404}
    assert set(_run_reads(api, owner, a)) == {200}
    runs = api.get(f"/api/v1/experiments/{exp}/runs", headers=owner.headers()).json()["items"]
    assert [r["id"] for r in runs] == [a["run_id"]]
    sessions = api.get("/api/v1/capture-sessions", headers=owner.headers()).json()["items"]
    assert [s["id"] for s in sessions] == [a["capture_session_id"]]
    # The sensor's readings across runs leave the deleted run's out, however they are read.
    assert _sensor_total(api, owner, a["sensor_id"]) == (10, 10, 10, 10)
    # A late batch for it is refused like one for an unknown run; so is any change.
    assert_problem(api.ingest(b, _readings(1, T0 + timedelta(hours=1, seconds=5))), 404)
    assert_problem(
        api.patch(f"/api/v1/runs/{b['run_id']}", {"name": "x"}, headers=owner.headers()), 404
    )
    assert_problem(
        api.request("DELETE", f"/api/v1/runs/{b['run_id']}", headers=owner.headers()), 404
    )
    listed = api.get("/api/v1/deleted", headers=owner.headers()).json()["items"]
    assert [(d["kind"], d["id"]) for d in listed] == [("run", b["run_id"])]
    assert_problem(api.get("/api/v1/deleted", headers=owner.headers("editor")), 403)

    assert_problem(api.post(f"/api/v1/runs/{a['run_id']}/restore", headers=owner.headers()), 404)
    assert_problem(
        api.post(f"/api/v1/runs/{b['run_id']}/restore", headers=owner.headers("editor")), 403
    )
    r = api.post(f"/api/v1/runs/{b['run_id']}/restore", headers=owner.headers())
    assert r.status_code == 200, r.text
    assert r.json()["id"] == b["run_id"]
    assert set(_run_reads(api, owner, b)) == {200}
    assert _sensor_total(api, owner, a["sensor_id"]) == (20, 20, 20, 20)
    assert api.get("/api/v1/deleted", headers=owner.headers()).json()["items"] == []
    kinds = _kinds(api, owner)
    assert kinds.index("run.restored") < kinds.index("run.deleted")  # newest first
    events = api.get(f"/api/v1/runs/{b['run_id']}/events", headers=owner.headers()).json()["items"]
    deleted = next(e for e in events if e["kind"] == "run.deleted")
    assert deleted["actor"] == f"user:{owner.user_id}"
    assert deleted["payload"]["purge_after"] == purge_after.isoformat()


def test_a_capturing_run_or_its_experiment_is_not_deleted(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    for url in (f"/api/v1/runs/{ids['run_id']}", f"/api/v1/experiments/{ids['experiment_id']}"):
        body = assert_problem(api.request("DELETE", url, headers=owner.headers()), 409)
        assert "running capture session" in body["detail"]
    assert api.get(f"/api/v1/runs/{ids['run_id']}", headers=owner.headers()).status_code == 200
    assert api.ingest(ids, _readings(3)).status_code == 202


def test_a_deleted_experiment_takes_its_runs_and_brings_back_only_those(api: Api) -> None:
    owner = api.project()
    a, b = _two_runs(api, owner)
    exp = a["experiment_id"]
    other = api.experiment(owner, "kept")
    assert (
        api.request("DELETE", f"/api/v1/runs/{b['run_id']}", headers=owner.headers()).status_code
        == 200
    )
    assert_problem(
        api.request("DELETE", f"/api/v1/experiments/{exp}", headers=owner.headers("editor")), 403
    )
    r = api.request("DELETE", f"/api/v1/experiments/{exp}", headers=owner.headers())
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "experiment"

    assert_problem(api.get(f"/api/v1/experiments/{exp}", headers=owner.headers()), 404)
    assert_problem(api.get(f"/api/v1/experiments/{exp}/runs", headers=owner.headers()), 404)
    assert_problem(api.post(f"/api/v1/experiments/{exp}/runs", {}, headers=owner.headers()), 404)
    listed = api.get(
        "/api/v1/experiments", params={"include_archived": "true"}, headers=owner.headers()
    )
    assert [e["id"] for e in listed.json()["items"]] == [other]
    assert set(_run_reads(api, owner, a)) == {404}
    assert _sensor_total(api, owner, a["sensor_id"]) == (0, 0, 0, 0)
    deleted = api.get("/api/v1/deleted", headers=owner.headers()).json()["items"]
    assert [(d["kind"], d["id"]) for d in deleted] == [("experiment", exp), ("run", b["run_id"])]
    # A run deleted with its experiment comes back with it, not alone.
    body = assert_problem(
        api.post(f"/api/v1/runs/{a['run_id']}/restore", headers=owner.headers()), 409
    )
    assert exp in body["detail"]

    r = api.post(f"/api/v1/experiments/{exp}/restore", headers=owner.headers())
    assert r.status_code == 200, r.text
    assert set(_run_reads(api, owner, a)) == {200}
    assert set(_run_reads(api, owner, b)) == {404}  # deleted on its own before: still deleted
    assert _sensor_total(api, owner, a["sensor_id"]) == (10, 10, 10, 10)
    assert {"experiment.deleted", "experiment.restored", "run.deleted"} <= set(_kinds(api, owner))


def _rows_of(database_url: str, run_ids: list[str], experiment_id: str | None) -> dict[str, int]:
    """Rows in any table that name one of the runs or the experiment, or hang off a batch
    of those runs; every table and column the models know, so a new one is checked too."""
    runs = [uuid.UUID(r) for r in run_ids]
    found: dict[str, int] = {}
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            batch_ids = set(conn.scalars(select(Base.metadata.tables["telemetry_batches"].c.id).where(
                Base.metadata.tables["telemetry_batches"].c.run_id.in_(runs))))  # fmt: skip
            for table in Base.metadata.sorted_tables:
                for col in table.columns:
                    values = _values_for(table.name, col, runs, experiment_id, batch_ids)
                    if values:
                        n = conn.scalar(
                            select(func.count()).select_from(table).where(col.in_(values))
                        )
                        if n:
                            found[f"{table.name}.{col.name}"] = int(n)
    finally:
        engine.dispose()
    return found


def _values_for(
    table: str,
    col: Column[Any],
    runs: list[uuid.UUID],
    experiment_id: str | None,
    batches: set[int],
) -> list[Any]:
    refs = {fk.column.table.name for fk in col.foreign_keys}
    if col.name == "run_id" or "runs" in refs or (table == "runs" and col.name == "id"):
        return list(runs)
    if experiment_id and (
        col.name == "experiment_id"
        or "experiments" in refs
        or (table == "experiments" and col.name == "id")
    ):
        return [uuid.UUID(experiment_id)]
    if col.name == "batch_id" or (table == "telemetry_batches" and col.name == "id"):
        return list(batches)
    return []


def test_purge_removes_every_row_of_a_run_and_of_an_experiment(database_url: str) -> None:
    with make_client(database_url, delete_grace_s=3600) as client:
        api = Api(client)
        owner = api.project()
        a, b = _two_runs(api, owner)
        kept = api.stack(owner)  # another experiment, untouched by any purge
        assert api.ingest(kept, _readings(5)).status_code == 202
        h = owner.headers()
        assert api.request("DELETE", f"/api/v1/runs/{b['run_id']}", headers=h).status_code == 200
        sessions = app_container(client.app).sessionmaker
        assert _rows_of(database_url, [b["run_id"]], None)  # still there, restorable

        # Within the grace period nothing goes.
        assert purge.purge_expired(sessions, timedelta(seconds=3600)) == 0
        # Past it (an API process whose grace is 0), a restore is refused even before the
        # purge has run.
        with make_client(database_url, delete_grace_s=0) as hasty:
            r = hasty.post(f"/api/v1/runs/{b['run_id']}/restore", headers=h)
            assert_problem(r, 409)
        later = datetime.now(UTC) + timedelta(seconds=3601)
        assert purge.purge_expired(sessions, timedelta(seconds=3600), now=later) == 1
        assert _rows_of(database_url, [b["run_id"]], None) == {}
        assert set(_run_reads(api, owner, a)) == {200}
        assert_problem(api.post(f"/api/v1/runs/{b['run_id']}/restore", headers=h), 404)
        events = api.get("/api/v1/events", params={"limit": 1000}, headers=h).json()["items"]
        purged = next(e for e in events if e["kind"] == "run.purged")
        assert purged["payload"]["purged_run_id"] == b["run_id"] and purged["run_id"] is None

        exp = a["experiment_id"]
        assert api.request("DELETE", f"/api/v1/experiments/{exp}", headers=h).status_code == 200
        # Past this deletion's grace too: the clock moved on since ``later`` was taken.
        later = datetime.now(UTC) + timedelta(seconds=3601)
        assert purge.purge_expired(sessions, timedelta(seconds=3600), now=later) == 1
        assert _rows_of(database_url, [a["run_id"], b["run_id"]], exp) == {}
        assert "experiment.purged" in _kinds(api, owner)
        assert (
            api.readings(owner, run_id=kept["run_id"])
            and len(api.readings(owner, sensor_id=kept["sensor_id"])) == 5
        )


def test_the_app_purges_expired_deletions_by_itself(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cloud_app, "PURGE_EVERY_S", 0.05)
    with make_client(database_url, delete_grace_s=0) as client:
        api = Api(client)
        owner = api.project()
        ids = api.stack(owner)
        assert api.ingest(ids, _readings(3)).status_code == 202
        _stop(api, owner, ids)
        assert (
            api.request(
                "DELETE", f"/api/v1/runs/{ids['run_id']}", headers=owner.headers()
            ).status_code
            == 200
        )
        deadline = time.monotonic() + 30
        while _rows_of(database_url, [ids["run_id"]], None) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _rows_of(database_url, [ids["run_id"]], None) == {}
