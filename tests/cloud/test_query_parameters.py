"""A query parameter an endpoint does not take is refused, not ignored.

``GET /telemetry?run_id=R&sensor=S`` (for ``sensor_id``) would otherwise answer every sensor's
readings of the run, looking like the one sensor's that was asked for."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.cloud.conftest import Api, assert_problem


def test_a_misspelt_filter_is_a_422_naming_it(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    ts = datetime.now(UTC).isoformat()
    assert api.ingest(ids, [{"timestamp": ts, "raw_value": 1.0}]).status_code == 202
    h = owner.headers()
    params = {"run_id": ids["run_id"], "sensor": ids["sensor_id"]}
    body = assert_problem(api.get("/api/v1/telemetry", params=params, headers=h), 422, "sensor")
    assert "sensor_id" in body["errors"][0]["reason"]  # says what it does take
    r = api.get(f"/api/v1/telemetry?run_id={ids['run_id']}&=1", headers=h)
    assert_problem(r, 422, "(empty name)")
    r = api.get("/api/v1/experiments", params={"limt": "5"}, headers=h)
    assert_problem(r, 422, "limt")
    # A single value given twice is not read as the last one.
    r = api.get("/api/v1/experiments?limit=1&limit=500", headers=h)
    assert_problem(r, 422, "limit")
    # What they do take still works, a parameter given twice included where it is a list.
    name = api.get(f"/api/v1/sensors/{ids['sensor_id']}", headers=h).json()["name"]
    other = api.run(owner, ids["experiment_id"])
    r = api.get(
        f"/api/v1/runs/compare?run_id={ids['run_id']}&run_id={other}&sensor={name}", headers=h
    )
    assert r.status_code == 200, r.text
    r = api.get("/api/v1/telemetry", params={"run_id": ids["run_id"]}, headers=h)
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    r = api.get("/api/v1/runs?status=running&status=succeeded", headers=h)
    assert r.status_code == 200
    # Run search reads its own terms from the query string, and names a bad one itself.
    assert api.get("/api/v1/runs?param.lr=0.1", headers=h).status_code == 200
    assert_problem(api.get("/api/v1/runs?bogus=1", headers=h), 422)


def test_probes_and_streams_are_not_held_to_it(api: Api) -> None:
    assert api.get("/healthz?from=lb").status_code == 200
    assert api.get("/readyz?from=lb").status_code == 200
