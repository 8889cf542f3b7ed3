"""Annotations on a run: added, listed by time, changed and deleted by editors, read by
viewers, journalled, and refused clearly when they make no sense."""

from __future__ import annotations

import uuid
from typing import Any

from tests.cloud.conftest import Api, Identity, assert_problem

T0 = "2026-03-01T10:00:00Z"


def _add(api: Api, who: Identity, run_id: str, role: str = "editor", **body: Any) -> Any:
    return api.post(f"/api/v1/runs/{run_id}/annotations", body, headers=who.headers(role))


def _list(api: Api, who: Identity, run_id: str, **params: Any) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/runs/{run_id}/annotations", params=params, headers=who.headers("viewer"))
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_add_list_change_delete_with_the_journal(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    run = ids["run_id"]
    r = _add(api, owner, run, start="2026-03-01T10:05:00Z", end="2026-03-01T10:06:30Z",
             text="  door opened \u200b", tags=["door", "door", " ops "])  # fmt: skip
    assert r.status_code == 201, r.text
    door = r.json()
    assert door["text"] == "door opened" and door["tags"] == ["door", "ops"]
    assert door["created_by"] == owner.user_id and door["sensor_id"] is None
    r = _add(api, owner, run, start=T0, text="probe re-seated", sensor_id=ids["sensor_id"])
    assert r.status_code == 201, r.text
    probe = r.json()
    assert probe["end"] is None

    assert [a["id"] for a in _list(api, owner, run)] == [probe["id"], door["id"]]

    r = api.patch(f"/api/v1/annotations/{door['id']}", {"text": "door opened (2 min)", "end": None},
                  headers=owner.headers("editor"))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "door opened (2 min)" and r.json()["end"] is None
    got = api.get(f"/api/v1/annotations/{door['id']}", headers=owner.headers("viewer")).json()
    assert got["text"] == "door opened (2 min)"

    r = api.request("DELETE", f"/api/v1/annotations/{probe['id']}", headers=owner.headers("editor"))
    assert r.status_code == 204, r.text
    assert [a["id"] for a in _list(api, owner, run)] == [door["id"]]
    r = api.get(f"/api/v1/annotations/{probe['id']}", headers=owner.headers())
    assert_problem(r, 404)

    events = api.get(f"/api/v1/runs/{run}/events", headers=owner.headers()).json()["items"]
    kinds = [e["kind"] for e in events if e["kind"].startswith("annotation.")]
    assert sorted(kinds) == ["annotation.created", "annotation.created",
                             "annotation.deleted", "annotation.updated"]  # fmt: skip
    created = next(e for e in events if e["payload"].get("annotation_id") == door["id"])
    assert created["actor"] == f"user:{owner.user_id}"


def test_filters_by_sensor_and_by_overlap(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    run, sensor = ids["run_id"], ids["sensor_id"]
    other, _ = api.sensor(owner)
    spans = {
        "run-wide": ("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", None),
        "mine": ("2026-03-01T10:10:00Z", None, sensor),
        "other": ("2026-03-01T10:20:00Z", "2026-03-01T10:25:00Z", other),
        "late": ("2026-03-01T12:00:00Z", None, None),
    }
    for text, (start, end, sid) in spans.items():
        body = {"start": start, "text": text, **({"end": end} if end else {}),
                **({"sensor_id": sid} if sid else {})}  # fmt: skip
        assert _add(api, owner, run, **body).status_code == 201

    assert [a["text"] for a in _list(api, owner, run, sensor_id=sensor)] == [
        "run-wide",
        "mine",
        "late",
    ]
    window = _list(api, owner, run, since="2026-03-01T10:15:00Z", until="2026-03-01T11:30:00Z")
    assert [a["text"] for a in window] == ["run-wide", "other"]
    pages, cursor = [], None
    while True:
        r = api.get(f"/api/v1/runs/{run}/annotations", headers=owner.headers(),
                    params={"limit": 1, **({"cursor": cursor} if cursor else {})})  # fmt: skip
        pages += [a["text"] for a in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == ["run-wide", "mine", "other", "late"]


def test_nonsense_is_refused_and_nothing_is_kept(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    run = ids["run_id"]
    r = _add(api, owner, run, start="2026-03-01T10:00:00Z", end="2026-03-01T09:00:00Z", text="x")
    assert "start" in assert_problem(r, 422, "end")["detail"]
    assert_problem(_add(api, owner, run, start=T0, text=" \u200b "), 422, "text")
    assert_problem(_add(api, owner, run, start="2026-03-01T10:00:00", text="naive"), 422, "start")
    assert_problem(_add(api, owner, run, start=T0, text="x", colour="red"), 422, "colour")
    elsewhere = api.project("elsewhere")
    foreign_sensor, _ = api.sensor(elsewhere)
    r = _add(api, owner, run, start=T0, text="x", sensor_id=foreign_sensor)
    assert_problem(r, 422, "sensor_id")
    assert _list(api, owner, run) == []

    kept = _add(api, owner, run, start=T0, text="kept").json()
    r = api.patch(f"/api/v1/annotations/{kept['id']}", {"end": "2026-03-01T09:00:00Z"},
                  headers=owner.headers("editor"))  # fmt: skip
    assert_problem(r, 422, "end")
    assert [(a["text"], a["end"]) for a in _list(api, owner, run)] == [("kept", None)]


def test_roles_and_projects(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    run = ids["run_id"]
    assert_problem(_add(api, owner, run, role="viewer", start=T0, text="x"), 403)
    note = _add(api, owner, run, start=T0, text="mine").json()

    stranger = api.project("elsewhere")
    assert_problem(_add(api, stranger, run, start=T0, text="x"), 404)
    r = api.get(f"/api/v1/runs/{run}/annotations", headers=stranger.headers())
    assert_problem(r, 404)
    for method in ("GET", "DELETE"):
        r = api.request(method, f"/api/v1/annotations/{note['id']}", headers=stranger.headers())
        assert_problem(r, 404)
    r = api.patch(
        f"/api/v1/annotations/{note['id']}", {"text": "theirs"}, headers=stranger.headers()
    )
    assert_problem(r, 404)
    assert_problem(_add(api, owner, str(uuid.uuid4()), start=T0, text="x"), 404)
    assert [a["text"] for a in _list(api, owner, run)] == ["mine"]
