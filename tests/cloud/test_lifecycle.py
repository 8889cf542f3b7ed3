"""Experiments, runs and capture sessions: filters, archive, status lifecycle, session rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.cloud.conftest import Api, Identity, assert_problem


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


def test_experiment_filters_archive_and_pagination(api: Api, owner: Identity) -> None:
    h = owner.headers()
    a = api.experiment(owner, "Furnace calibration", ["furnace", "K"])
    b = api.experiment(owner, "Thermal cycling", ["cycling", "K"])
    c = api.experiment(owner, "Ambient drift", ["ambient"])

    def names(**params: object) -> list[str]:
        r = api.get("/api/v1/experiments", params=params, headers=h)
        assert r.status_code == 200, r.text
        return sorted(x["name"] for x in r.json()["items"])

    assert names(tag="K") == ["Furnace calibration", "Thermal cycling"]
    assert names(tag=["K", "furnace"]) == ["Furnace calibration"]
    assert names(q="therm") == ["Thermal cycling"]
    assert names(q="FURNACE") == ["Furnace calibration"]
    r = api.post(f"/api/v1/experiments/{c}/archive", headers=h)
    assert r.status_code == 200 and r.json()["archived_at"]
    assert names() == ["Furnace calibration", "Thermal cycling"]
    assert names(include_archived=True) == [
        "Ambient drift",
        "Furnace calibration",
        "Thermal cycling",
    ]
    assert names(status="archived") == ["Ambient drift"]
    # Archived experiments take no new runs; unarchive reopens them.
    assert_problem(api.post(f"/api/v1/experiments/{c}/runs", headers=h), 409)
    assert api.post(f"/api/v1/experiments/{c}/archive", headers=h).status_code == 200  # no-op
    assert api.post(f"/api/v1/experiments/{c}/unarchive", headers=h).json()["status"] == "active"
    assert api.post(f"/api/v1/experiments/{c}/runs", headers=h).status_code == 201
    # Keyset pagination walks everything once.
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/experiments", params=params, headers=h).json()
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted([a, b, c])
    r = api.patch(f"/api/v1/experiments/{a}", {"tags": ["new"], "description": "d"}, headers=h)
    assert r.status_code == 200 and r.json()["tags"] == ["new"]
    assert names(tag="furnace") == []
    assert names(tag="new") == ["Furnace calibration"]


def test_run_status_lifecycle(api: Api, owner: Identity) -> None:
    h = owner.headers()
    exp = api.experiment(owner)
    draft = api.run(owner, exp, {"name": "d", "status": "draft", "params": {"lr": 0.1}})
    r = api.get(f"/api/v1/runs/{draft}", headers=h).json()
    assert r["status"] == "draft" and r["started_at"] is None and r["params"] == {"lr": 0.1}
    r = api.patch(f"/api/v1/runs/{draft}", {"status": "running"}, headers=h).json()
    assert r["status"] == "running" and r["started_at"]
    assert_problem(api.patch(f"/api/v1/runs/{draft}", {"status": "draft"}, headers=h), 409)
    r = api.patch(f"/api/v1/runs/{draft}", {"status": "failed"}, headers=h).json()
    assert r["status"] == "failed" and r["ended_at"]
    for back in ("running", "succeeded", "draft", "cancelled"):
        assert_problem(
            api.patch(f"/api/v1/runs/{draft}", {"status": back}, headers=h), 409, "status"
        )
    assert api.patch(f"/api/v1/runs/{draft}", {"status": "failed"}, headers=h).status_code == 200
    assert_problem(
        api.patch(f"/api/v1/runs/{draft}", {"status": "paused"}, headers=h), 422, "status"
    )
    # Listing by status.
    other = api.run(owner, exp)
    r = api.get(f"/api/v1/experiments/{exp}/runs", params={"status": "running"}, headers=h)
    assert [x["id"] for x in r.json()["items"]] == [other]


def test_batch_status_partial_success(api: Api, owner: Identity) -> None:
    exp = api.experiment(owner)
    runs = [api.run(owner, exp) for _ in range(3)]
    api.patch(f"/api/v1/runs/{runs[2]}", {"status": "cancelled"}, headers=owner.headers())
    r = api.post(
        "/api/v1/runs:batch-status",
        {"run_ids": [*runs, runs[0]], "status": "succeeded"},
        headers=owner.headers(),
    )
    assert r.status_code == 200
    out = r.json()
    assert [x["ok"] for x in out["results"]] == [True, True, False]  # duplicates collapse
    assert out["results"][2]["error"]["status"] == 409
    statuses = [
        api.get(f"/api/v1/runs/{x}", headers=owner.headers()).json()["status"] for x in runs
    ]
    assert statuses == ["succeeded", "succeeded", "cancelled"]
    assert_problem(
        api.post(
            "/api/v1/runs:batch-status",
            {"run_ids": [], "status": "failed"},
            headers=owner.headers(),
        ),
        422,
        "run_ids",
    )


def test_capture_session_rules(api: Api, owner: Identity) -> None:
    h = owner.headers()
    exp = api.experiment(owner)
    run = api.run(owner, exp)
    s1 = api.session(owner, run, 1)
    # Ordinal unique per run; one running session per run.
    r = api.post(f"/api/v1/runs/{run}/capture-sessions", {"ordinal_number": 1}, headers=h)
    assert_problem(r, 409, "ordinal_number")
    r = api.post(f"/api/v1/runs/{run}/capture-sessions", {"ordinal_number": 2}, headers=h)
    body = assert_problem(r, 409, "status")
    assert body["running_capture_session_id"] == s1
    s2 = api.session(owner, run, 2, status="draft")
    url = f"/api/v1/runs/{run}/capture-sessions"
    # Stop: not before start, not in the future, only once.
    s1_data = api.get(f"{url}/{s1}", headers=h).json()
    before = datetime.fromisoformat(s1_data["started_at"]) - timedelta(seconds=5)
    assert_problem(
        api.post(f"{url}/{s1}/stop", {"stopped_at": before.isoformat()}, headers=h),
        422,
        "stopped_at",
    )
    future = datetime.now(UTC) + timedelta(hours=1)
    assert_problem(
        api.post(f"{url}/{s1}/stop", {"stopped_at": future.isoformat()}, headers=h),
        422,
        "stopped_at",
    )
    assert_problem(
        api.post(f"{url}/{s1}/stop", {"stopped_at": "2026-01-01T00:00:00"}, headers=h),
        422,
        "stopped_at",
    )
    assert_problem(api.post(f"{url}/{s1}/stop", {"status": "running"}, headers=h), 422, "status")
    r = api.post(f"{url}/{s1}/stop", headers=h)  # no body: succeeded, now
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert_problem(api.post(f"{url}/{s1}/stop", headers=h), 409)
    assert_problem(api.post(f"{url}/{s2}/stop", headers=h), 409)
    s3 = api.session(owner, run, 3)  # the run may run another session now
    listed = api.get(url, headers=h).json()["items"]
    assert [(x["ordinal_number"], x["status"]) for x in listed] == [
        (1, "succeeded"),
        (2, "draft"),
        (3, "running"),
    ]
    # Ending the run ends its running session with it.
    api.patch(f"/api/v1/runs/{run}", {"status": "failed"}, headers=h)
    assert api.get(f"{url}/{s3}", headers=h).json()["status"] == "failed"
    assert_problem(api.post(url, {"ordinal_number": 4}, headers=h), 409)
    # A session under the wrong run is not found.
    other_run = api.run(owner, exp)
    assert_problem(api.get(f"/api/v1/runs/{other_run}/capture-sessions/{s1}", headers=h), 404)


def test_starting_a_session_starts_a_draft_run(api: Api, owner: Identity) -> None:
    exp = api.experiment(owner)
    run = api.run(owner, exp, {"status": "draft"})
    api.session(owner, run)
    assert api.get(f"/api/v1/runs/{run}", headers=owner.headers()).json()["status"] == "running"


def test_projects(api: Api) -> None:
    who = api.project("alpha")
    r = api.get("/api/v1/projects", params={"name": "alpha"}, headers={"X-User-Id": who.user_id})
    assert [p["id"] for p in r.json()["items"]] == [who.project_id]
    r = api.get(f"/api/v1/projects/{who.project_id}", headers=who.headers("viewer"))
    assert r.status_code == 200 and r.json()["owner_user_id"] == who.user_id
    assert_problem(
        api.post("/api/v1/projects", {"name": ""}, headers={"X-User-Id": who.user_id}), 422, "name"
    )
    assert_problem(api.post("/api/v1/projects", {"name": "x"}), 401)


def test_a_draft_session_can_be_started(api: Api, owner: Identity) -> None:
    h = owner.headers()
    run = api.run(owner, api.experiment(owner), {"status": "draft"})
    draft = api.session(owner, run, 1, status="draft")
    other = api.session(owner, run, 2, status="draft")
    url = f"/api/v1/runs/{run}/capture-sessions"
    r = api.post(f"{url}/{draft}/start", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["started_at"]
    assert api.get(f"/api/v1/runs/{run}", headers=h).json()["status"] == "running"
    assert_problem(api.post(f"{url}/{draft}/start", headers=h), 409)
    assert_problem(api.post(f"{url}/{other}/start", headers=h), 409, "status")
    api.post(f"{url}/{draft}/stop", headers=h)
    assert api.post(f"{url}/{other}/start", headers=h).status_code == 200
    kinds = [e["kind"] for e in api.get(f"/api/v1/runs/{run}/events", headers=h).json()["items"]]
    assert kinds.count("capture_session.started") == 2
