"""The journal's reads: ``exclude_kind`` leaves kinds out (a run's page of what is not
routine), on SQLite and PostgreSQL; too many of them is a 422 naming the parameter."""

from __future__ import annotations

from tests.cloud.conftest import Api, assert_problem


def test_exclude_kind_leaves_the_routine_out(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    for k in range(3):
        r = api.ingest(ids, [{"timestamp": f"2026-03-01T10:00:0{k}Z", "raw_value": 1.0}])
        assert r.status_code == 202, r.text
    url = f"/api/v1/runs/{ids['run_id']}/events"
    everything = api.get(url, headers=owner.headers()).json()["items"]
    assert [e["kind"] for e in everything].count("telemetry.ingested") == 3
    routine = ["telemetry.ingested", "metrics.logged"]
    r = api.get(url, params={"exclude_kind": routine, "limit": 2}, headers=owner.headers())
    assert r.status_code == 200, r.text
    rest = [e for e in everything if e["kind"] not in routine]
    assert [e["id"] for e in r.json()["items"]] == [e["id"] for e in rest[:2]]
    assert rest and len(rest) < len(everything)
    project_wide = api.get(
        "/api/v1/events", params={"exclude_kind": "telemetry.ingested"}, headers=owner.headers()
    )
    assert all(e["kind"] != "telemetry.ingested" for e in project_wide.json()["items"])
    many = [f"kind.{k}" for k in range(21)]
    assert_problem(
        api.get(url, params={"exclude_kind": many}, headers=owner.headers()), 422, "exclude_kind"
    )
