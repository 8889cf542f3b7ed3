"""Every list is paginated the same way (SPEC §3): ``limit`` and an opaque ``cursor`` in,
``{"items": [...], "next_cursor": ...}`` out, in a stable keyset order.

Pages must cover a list exactly once even when the sort key ties (rows created in the same
instant are forced here), a cursor is accepted only by the list that wrote it, and a list
never shows another project's items, whatever the cursor or the filters.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from cloud.db import models
from cloud.db.engine import make_engine
from tests.cloud.conftest import Api, Identity, assert_problem

SAME_INSTANT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)  # before any row made today


def walk(
    api: Api, path: str, headers: dict[str, str], limit: int, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """All items of a list read ``limit`` at a time, and how many pages that took."""
    items: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        r = api.get(
            path,
            params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "next_cursor"}, page
        assert len(page["items"]) <= limit
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 100, "the cursor does not advance"


def ident(item: dict[str, Any]) -> str:
    """What identifies a list item: its id (a profile: its version, unique per sensor)."""
    return str(item.get("id") or item["version"])


def same_created_at(database_url: str, model: Any, *where: Any) -> None:
    """Give rows one created_at, so only the tiebreaker (id) orders them."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(model).where(*where).values(created_at=SAME_INSTANT))
    finally:
        engine.dispose()


@dataclass
class World:
    """One project with several of everything, and a second project with its own."""

    owner: Identity
    other: Identity
    sensors: list[str]
    profiled: str  # a sensor with several profile versions
    runs: list[str]
    experiments: list[str]
    sessions: list[str]  # all sessions of the project, in creation order
    run_sessions: list[str]  # the sessions of runs[0], by ordinal
    other_ids: dict[str, str]


def build(api: Api, database_url: str) -> World:
    owner = api.project("alpha")
    for i in range(4):  # more projects of the same owner
        r = api.post(
            "/api/v1/projects", {"name": f"alpha-{i}"}, headers={"X-User-Id": owner.user_id}
        )
        assert r.status_code == 201, r.text
    sensors = [api.sensor(owner, name=f"t{i}")[0] for i in range(5)]
    api.patch(f"/api/v1/sensors/{sensors[0]}", {"type": "pressure"}, headers=owner.headers())
    api.post(f"/api/v1/sensors/{sensors[1]}/revoke-token", headers=owner.headers())
    profiled = sensors[2]
    for v, kind in ((2, "polynomial"), (3, "linear"), (4, "polynomial"), (5, "linear")):
        payload = {"coefficients": [0, 1]} if kind == "polynomial" else {"a": 1, "b": 0}
        r = api.put(
            f"/api/v1/sensors/{profiled}/conversion-profile",
            {"version": f"v{v}", "kind": kind, "payload": payload},
            headers=owner.headers(),
        )
        assert r.status_code == 200, r.text
    experiments = [api.experiment(owner, f"e{i}") for i in range(2)]
    runs = [api.run(owner, experiments[0]), api.run(owner, experiments[1])]
    run_sessions = [api.session(owner, runs[0], n, status="draft") for n in (3, 1, 5, 2, 4)]
    run_sessions = [run_sessions[i] for i in (1, 3, 0, 4, 2)]  # ordinals 1..5
    started = f"/api/v1/runs/{runs[0]}/capture-sessions/{run_sessions[0]}/start"
    assert api.post(started, headers=owner.headers()).status_code == 200
    others = [api.session(owner, runs[1], n, status="draft") for n in (1, 2)]
    # Sensors, projects and project-wide sessions created "at once": the id alone orders them.
    same_created_at(
        database_url, models.Project, models.Project.owner_user_id == uuid.UUID(owner.user_id)
    )
    same_created_at(
        database_url, models.Sensor, models.Sensor.project_id == uuid.UUID(owner.project_id)
    )
    same_created_at(
        database_url,
        models.CaptureSession,
        models.CaptureSession.project_id == uuid.UUID(owner.project_id),
    )
    other = api.project("mallory")
    o = api.stack(other)
    api.put(
        f"/api/v1/sensors/{o['sensor_id']}/conversion-profile",
        {"version": "v2", "kind": "linear", "payload": {"a": 3, "b": 0}},
        headers=other.headers(),
    )
    return World(
        owner,
        other,
        sensors,
        profiled,
        runs,
        experiments,
        run_sessions + others,
        run_sessions,
        o,
    )


@pytest.fixture
def world(api: Api, database_url: str) -> World:
    return build(api, database_url)


@dataclass(frozen=True)
class Listing:
    name: str
    path: Callable[[World], str]
    headers: Callable[[World], dict[str, str]]


def _owner(w: World) -> dict[str, str]:
    return w.owner.headers("viewer")


LISTS = [
    Listing("projects", lambda w: "/api/v1/projects", lambda w: {"X-User-Id": w.owner.user_id}),
    Listing("sensors", lambda w: "/api/v1/sensors", _owner),
    Listing(
        "conversion_profiles",
        lambda w: f"/api/v1/sensors/{w.profiled}/conversion-profiles",
        _owner,
    ),
    Listing("run_capture_sessions", lambda w: f"/api/v1/runs/{w.runs[0]}/capture-sessions", _owner),
    Listing("capture_sessions", lambda w: "/api/v1/capture-sessions", _owner),
    Listing("experiments", lambda w: "/api/v1/experiments", _owner),
    Listing("runs", lambda w: f"/api/v1/experiments/{w.experiments[0]}/runs", _owner),
    Listing("events", lambda w: "/api/v1/events", _owner),
]
NEW = LISTS[:5]  # the lists paginated by this change; the others were already


def test_pages_walk_each_list_once_in_order(api: Api, world: World) -> None:
    w = world
    expected_sizes = {
        "projects": 5,
        "sensors": 5,
        "conversion_profiles": 5,
        "run_capture_sessions": 5,
        "capture_sessions": 7,
    }
    for listing in NEW:
        path, h = listing.path(w), listing.headers(w)
        whole = api.get(path, params={"limit": 500}, headers=h).json()
        assert whole["next_cursor"] is None
        assert len(whole["items"]) == expected_sizes[listing.name], listing.name
        for limit in (1, 2, 3):
            items, pages = walk(api, path, h, limit)
            assert list(map(ident, items)) == list(map(ident, whole["items"])), listing.name
            assert pages == -(-len(whole["items"]) // limit), (listing.name, limit)

    # The documented orders. Ties on created_at (forced in build) fall back to the id.
    projects = walk(api, "/api/v1/projects", {"X-User-Id": w.owner.user_id}, 2)[0]
    assert [p["id"] for p in projects] == sorted((p["id"] for p in projects), reverse=True)
    sensors = walk(api, "/api/v1/sensors", w.owner.headers(), 2)[0]
    assert [s["id"] for s in sensors] == sorted(w.sensors, reverse=True)
    sessions = walk(api, "/api/v1/capture-sessions", w.owner.headers(), 2)[0]
    assert [s["id"] for s in sessions] == sorted(w.sessions, reverse=True)
    profiles = walk(api, f"/api/v1/sensors/{w.profiled}/conversion-profiles", _owner(w), 2)[0]
    assert [p["version"] for p in profiles] == ["v1", "v2", "v3", "v4", "v5"]
    run_sessions = walk(api, f"/api/v1/runs/{w.runs[0]}/capture-sessions", _owner(w), 2)[0]
    assert [s["id"] for s in run_sessions] == w.run_sessions
    assert [s["ordinal_number"] for s in run_sessions] == [1, 2, 3, 4, 5]


def test_new_items_do_not_shift_a_walk(api: Api, world: World) -> None:
    """A sensor registered mid-walk lands before the cursor (newest first): the walk goes on
    without repeating or skipping what was there."""
    w = world
    first = api.get("/api/v1/sensors", params={"limit": 2}, headers=w.owner.headers()).json()
    api.sensor(w.owner, name="late")
    rest, _ = walk(api, "/api/v1/sensors", w.owner.headers(), 2, cursor=first["next_cursor"])
    seen = [s["id"] for s in first["items"] + rest]
    assert seen == sorted(w.sensors, reverse=True)


def test_filters(api: Api, world: World) -> None:
    w = world
    h = w.owner.headers()

    def ids(path: str, **params: Any) -> list[str]:
        return [x["id"] for x in walk(api, path, h, 2, **params)[0]]

    assert ids("/api/v1/sensors", name="t3") == [w.sensors[3]]
    assert ids("/api/v1/sensors", name="nope") == []
    assert ids("/api/v1/sensors", type="pressure") == [w.sensors[0]]
    assert ids("/api/v1/sensors", token_status="revoked") == [w.sensors[1]]
    assert sorted(ids("/api/v1/sensors", token_status="active")) == sorted(
        s for s in w.sensors if s != w.sensors[1]
    )
    assert_problem(api.get("/api/v1/sensors?token_status=lost", headers=h), 422, "token_status")

    profiles = walk(api, f"/api/v1/sensors/{w.profiled}/conversion-profiles", h, 1, kind="linear")
    assert [p["version"] for p in profiles[0]] == ["v1", "v3", "v5"]

    run_path = f"/api/v1/runs/{w.runs[0]}/capture-sessions"
    assert ids(run_path, status="running") == [w.run_sessions[0]]
    assert ids(run_path, status="draft") == w.run_sessions[1:]
    assert_problem(api.get(run_path, params={"status": "paused"}, headers=h), 422, "status")

    assert ids("/api/v1/capture-sessions", status="running") == [w.run_sessions[0]]
    assert sorted(ids("/api/v1/capture-sessions", run_id=w.runs[1])) == sorted(w.sessions[5:])
    assert sorted(ids("/api/v1/capture-sessions", experiment_id=w.experiments[0])) == sorted(
        w.run_sessions
    )
    row = api.get("/api/v1/capture-sessions", params={"run_id": w.runs[1]}, headers=h).json()
    item = row["items"][0]
    assert item["run"]["id"] == w.runs[1] and item["experiment"]["id"] == w.experiments[1]
    assert item["capture_session_id"] == item["id"]

    mine = {"X-User-Id": w.owner.user_id}
    r = api.get("/api/v1/projects", params={"name": "alpha-2"}, headers=mine).json()
    assert [p["name"] for p in r["items"]] == ["alpha-2"] and r["next_cursor"] is None


@pytest.mark.parametrize("listing", NEW, ids=[x.name for x in NEW])
def test_limit_bounds(api: Api, world: World, listing: Listing) -> None:
    path, h = listing.path(world), listing.headers(world)
    for bad in ("0", "-1", "501", "x", "1e3"):
        assert_problem(api.get(path, params={"limit": bad}, headers=h), 422, "limit")
    assert api.get(path, params={"limit": 500}, headers=h).status_code == 200
    default = api.get(path, headers=h).json()
    assert default["next_cursor"] is None and default["items"]


@pytest.mark.parametrize("listing", LISTS, ids=[x.name for x in LISTS])
def test_garbage_cursors_are_422_on_cursor(api: Api, world: World, listing: Listing) -> None:
    from cloud.pagination import encode

    path, h = listing.path(world), listing.headers(world)
    crafted = [
        "zzz",
        "!!!",
        "bm90IGpzb24",  # "not json"
        encode(),
        encode(listing.name),
        encode(listing.name, 1, 2, 3),
        encode(listing.name, "2025-01-01T00:00:00", str(uuid.uuid4())),  # naive
        encode(listing.name, "2025-01-01T00:00:00+00:00", 1),
        encode(listing.name, True),
        encode(listing.name, 2**70),
        encode(listing.name, [1], {"a": 1}),
        encode(listing.name.upper(), 1),
    ]
    for cursor in crafted:
        assert_problem(api.get(path, params={"cursor": cursor}, headers=h), 422, "cursor")


def test_a_cursor_works_only_in_the_list_that_wrote_it(api: Api, world: World) -> None:
    w = world
    # Lists with room for a second page, so each hands out a real cursor.
    for _ in range(2):
        api.run(w.owner, w.experiments[0])
    cursors = {}
    for listing in LISTS:
        page = api.get(listing.path(w), params={"limit": 1}, headers=listing.headers(w)).json()
        assert page["next_cursor"], listing.name
        cursors[listing.name] = page["next_cursor"]
    # And cursors of lists with keys of other types: telemetry, metrics.
    o = w.other_ids
    stamps = ["2025-12-05T12:00:00Z", "2025-12-05T12:00:01Z"]
    assert api.ingest(o, [{"timestamp": t, "raw_value": 1} for t in stamps]).status_code == 202
    for path, params in (
        ("/api/v1/telemetry", {"run_id": o["run_id"]}),
        (f"/api/v1/runs/{o['run_id']}/metrics", {"name": "loss"}),
    ):
        if "metrics" in path:
            points = [{"name": "loss", "step": i, "value": 0.5} for i in range(2)]
            r = api.post(path, {"metrics": points}, headers=w.other.headers())
            assert r.status_code in (200, 201, 202), r.text
        page = api.get(path, params={**params, "limit": 1}, headers=w.other.headers()).json()
        assert page["next_cursor"], path
        cursors[path] = page["next_cursor"]
    for listing in LISTS:
        path, h = listing.path(w), listing.headers(w)
        assert api.get(path, params={"cursor": cursors[listing.name]}, headers=h).status_code == 200
        for name, cursor in cursors.items():
            if name == listing.name:
                continue
            r = api.get(path, params={"cursor": cursor}, headers=h)
            assert_problem(r, 422, "cursor")


def test_another_projects_items_never_appear(api: Api, world: World) -> None:
    w = world
    o, mallory = w.other_ids, w.other
    alice_ids = set(w.sensors + w.sessions + w.runs + w.experiments + [w.owner.project_id])
    mh = mallory.headers()
    for path, headers in (
        ("/api/v1/projects", {"X-User-Id": mallory.user_id}),
        ("/api/v1/projects", mh),
        ("/api/v1/sensors", mh),
        ("/api/v1/capture-sessions", mh),
        (f"/api/v1/runs/{o['run_id']}/capture-sessions", mh),
        (f"/api/v1/sensors/{o['sensor_id']}/conversion-profiles", mh),
    ):
        items, _ = walk(api, path, headers, 1)
        assert items, path
        for item in items:
            assert ident(item) not in alice_ids, path
            assert item.get("project_id", mallory.project_id) == mallory.project_id, path
    # Alice's cursors are only positions: in Mallory's hands they still list Mallory's items.
    for path in ("/api/v1/sensors", "/api/v1/capture-sessions"):
        cursor = api.get(path, params={"limit": 1}, headers=w.owner.headers()).json()
        r = api.get(path, params={"cursor": cursor["next_cursor"]}, headers=mh)
        assert r.status_code == 200
        assert not set(map(ident, r.json()["items"])) & alice_ids
    # Addressing Alice's run, sensor or experiment is 404, never an empty or foreign list.
    for path in (
        f"/api/v1/runs/{w.runs[0]}/capture-sessions",
        f"/api/v1/sensors/{w.profiled}/conversion-profiles",
        f"/api/v1/capture-sessions?run_id={w.runs[0]}",
        f"/api/v1/capture-sessions?experiment_id={w.experiments[0]}",
    ):
        assert_problem(api.get(path, headers=mh), 404)
    # Project names are not a way in either.
    r = api.get("/api/v1/projects", params={"name": "alpha"}, headers=mh).json()
    assert r["items"] == []


def test_a_well_formed_cursor_past_the_end_is_an_empty_last_page(api: Api, world: World) -> None:
    """Integer keys at the edge of their columns' range (32-bit ordinals, 64-bit profile ids)
    compare without an overflow on either database; beyond it they are refused."""
    from cloud.pagination import INT64, encode

    w = world
    for path, cursor in (
        (f"/api/v1/runs/{w.runs[0]}/capture-sessions", encode("run_capture_sessions", 2**31 - 1)),
        (f"/api/v1/sensors/{w.profiled}/conversion-profiles", encode("conversion_profiles", INT64)),
        ("/api/v1/sensors", encode("sensors", "0001-01-01T00:00:00+00:00", str(uuid.UUID(int=0)))),
    ):
        r = api.get(path, params={"cursor": cursor}, headers=w.owner.headers())
        assert r.status_code == 200, (path, r.text)
        assert r.json() == {"items": [], "next_cursor": None}
    # Before the start: the whole list.
    r = api.get(
        f"/api/v1/runs/{w.runs[0]}/capture-sessions",
        params={"cursor": encode("run_capture_sessions", -(2**31))},
        headers=w.owner.headers(),
    )
    assert [s["id"] for s in r.json()["items"]] == w.run_sessions
    for ordinal in (2**31, -(2**31) - 1, INT64):
        r = api.get(
            f"/api/v1/runs/{w.runs[0]}/capture-sessions",
            params={"cursor": encode("run_capture_sessions", ordinal)},
            headers=w.owner.headers(),
        )
        assert_problem(r, 422, "cursor")
