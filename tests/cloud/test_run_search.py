"""GET /api/v1/runs: malformed terms are 422 problems naming the term and what is wrong;
names that need quotes; cursors belong to their sort; who may search."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cloud.migrate import upgrade
from tests.cloud.conftest import Api, Identity, assert_problem, make_client
from tests.support.services import postgres_database

BAD = [
    ("metric.loss.avg<1", "metric.loss.avg<1", "avg is not a summary; use min, max, last, count"),
    ("telemetry.probe.avg>1", "telemetry.probe.avg>1", "use min, max, mean, count"),
    ("metric.loss<1", "metric.loss<1", "name the summary"),
    ("param.setpoint", "param.setpoint", "no comparison"),
    ("colour=red", "colour=red", "not a filter"),
    ("metric.loss.min<abc", "metric.loss.min<abc", "'abc' is not a number"),
    ("metric.loss.min%3C", "metric.loss.min<", "no value after <"),
    ("param.x==1", "param.x==1", "write = once"),
    ("param.x!1", "param.x!1", "! is only part of !="),
    ("created_at=2026-01-01T00:00:00Z", "created_at=2026-01-01T00:00:00Z", "compare times with"),
    ("created_at>2026-01-01", "created_at>2026-01-01", "has no zone"),
    ("started_at<yesterday", "started_at<yesterday", "not an RFC 3339 time"),
    ("created_at>2026-01-01T00:00:00+01:00", "created_at>2026-01-01T00:00:00 01:00", "%2B"),
    ("status!=running", "status!=running", "status takes only ="),
    ("tag%3Dgold", "tag=gold", "write the = after tag as it is"),
    ("telemetry.nosuch.max>1", "telemetry.nosuch.max>1", "no sensor named 'nosuch'"),
    ("metric.loss.min<1e999", "metric.loss.min<1e999", "too large"),
    ("param.=1", "param.=1", "the name is empty"),
    ('param."a=1', 'param."a=1', "no closing quote"),
    ('param.a"b"c=1', 'param.a"b"c=1', 'a name with " cannot be searched'),
    ("param.x=%00", "query", "NUL"),
    (
        "&".join(f"param.p{i}={i}" for i in range(31)),
        "query",
        "31 comparisons; a search takes at most 30",
    ),  # refused for every route by RequestBodyMiddleware
    ("param.x=%FF", "param.x=%FF", "not UTF-8"),
    ("sort=metric.loss.avg", "sort", "avg is not a summary"),
    ("sort=-param.x%3C1", "sort", "a sort has no operator"),
    ("sort=colour", "sort", "not a filter"),
    ("status=paused", "status", "'draft', 'running'"),
    ("limit=0", "limit", ""),
    ("experiment_id=nope", "experiment_id", ""),
    ("cursor=nope", "cursor", ""),
]


@pytest.fixture
def owner(api: Api) -> Identity:
    owner = api.project()
    api.sensor(owner, name="probe")
    return owner


def test_a_malformed_term_is_a_422_naming_it(api: Api, owner: Identity) -> None:
    for query, field, reason in BAD:
        r = api.get(f"/api/v1/runs?{query}", headers=owner.headers())
        body = assert_problem(r, 422, field)
        named = [e for e in body["errors"] if e["field"].startswith(field)]
        assert named and reason in named[0]["reason"], (query, body)
        if field not in ("status", "limit", "experiment_id", "cursor", "query"):
            assert reason in body["detail"], (query, body)


def test_every_malformed_term_is_named_at_once(api: Api, owner: Identity) -> None:
    r = api.get("/api/v1/runs?metric.a.avg<1&param.x=1&colour=red", headers=owner.headers())
    body = assert_problem(r, 422)
    assert [e["field"] for e in body["errors"]] == ["metric.a.avg<1", "colour=red"]


def test_names_with_operators_dots_or_spaces(api: Api, owner: Identity) -> None:
    sensor_id, token = api.sensor(owner, name="furnace probe.1")
    exp = api.experiment(owner)
    run = api.run(owner, exp, {"name": "odd", "params": {"a<b": 5, "x.y": "on"}})
    plain = api.run(owner, exp, {"name": "plain", "params": {"x.y": "off"}})
    for run_id in (run, plain):
        points = [{"name": "loss<x", "step": 0, "value": 1.5 if run_id == run else 9.0}]
        r = api.post(f"/api/v1/runs/{run_id}/metrics", {"metrics": points}, headers=owner.headers())
        assert r.status_code == 201, r.text
    session = api.session(owner, run)
    ids = {"sensor_id": sensor_id, "token": token, "run_id": run, "capture_session_id": session}
    r = api.ingest(ids, [{"timestamp": _now(), "raw_value": 300.0}])
    assert r.status_code == 202, r.text
    for query in (
        'param."a<b"=5',
        "param.x.y=on",
        'metric."loss<x".max<2',
        "telemetry.furnace probe.1.count=1",
        'telemetry."furnace probe.1".max>0',
        "telemetry.furnace%20probe.1.max>0",
        "param.x.y%3D%22on%22",
    ):
        assert names(api, owner, query) == ["odd"], query
    assert names(api, owner, "param.x.y!=on") == ["plain"]


def test_a_cursor_belongs_to_its_sort(api: Api, owner: Identity) -> None:
    exp = api.experiment(owner)
    for i in range(3):
        api.run(owner, exp, {"name": f"r{i}", "params": {"x": i}})
    by_x = api.get("/api/v1/runs?sort=param.x&limit=1", headers=owner.headers()).json()
    assert [run["name"] for run in by_x["items"]] == ["r0"]
    r = api.get(
        f"/api/v1/runs?sort=-param.x&limit=1&cursor={by_x['next_cursor']}",
        headers=owner.headers(),
    )
    assert_problem(r, 422, "cursor")
    by_created = api.get("/api/v1/runs?limit=1", headers=owner.headers()).json()
    r = api.get(
        f"/api/v1/runs?sort=param.x&cursor={by_created['next_cursor']}", headers=owner.headers()
    )
    assert_problem(r, 422, "cursor")
    r = api.get(
        f"/api/v1/runs?sort=param.x&limit=1&cursor={by_x['next_cursor']}", headers=owner.headers()
    )
    assert [run["name"] for run in r.json()["items"]] == ["r1"]


def test_who_may_search(api: Api, owner: Identity) -> None:
    exp = api.experiment(owner)
    api.run(owner, exp, {"name": "mine"})
    assert api.get("/api/v1/runs").status_code == 401
    r = api.get("/api/v1/runs", headers=owner.headers("viewer"))
    assert r.status_code == 200 and [i["name"] for i in r.json()["items"]] == ["mine"]
    stranger = api.project("other")
    assert api.get("/api/v1/runs", headers=stranger.headers()).json()["items"] == []
    # Another project's sensor name is not this project's.
    r = api.get("/api/v1/runs?telemetry.probe.max>0", headers=stranger.headers())
    assert_problem(r, 422, "telemetry.probe.max>0")


def test_a_deleted_run_is_not_found_until_restored(api: Api, owner: Identity) -> None:
    exp = api.experiment(owner)
    kept = api.run(owner, exp, {"name": "kept", "params": {"x": 1}})
    gone = api.run(owner, exp, {"name": "gone", "params": {"x": 1}})
    assert kept and sorted(names(api, owner, "param.x=1")) == ["gone", "kept"]
    r = api.request("DELETE", f"/api/v1/runs/{gone}", headers=owner.headers())
    assert r.status_code == 200, r.text
    assert names(api, owner, "param.x=1") == ["kept"]
    assert names(api, owner, "sort=param.x") == ["kept"]
    assert api.post(f"/api/v1/runs/{gone}/restore", headers=owner.headers()).status_code == 200
    assert sorted(names(api, owner, "param.x=1")) == ["gone", "kept"]


def names(api: Api, who: Identity, query: str) -> list[Any]:
    r = api.get(f"/api/v1/runs?{query}", headers=who.headers())
    assert r.status_code == 200, (query, r.text)
    return [item["name"] for item in r.json()["items"]]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def icu_database_url() -> Iterator[str]:
    """A PostgreSQL database whose text sorts by an ICU English locale ("a" before "B"),
    as a server set up for people would: the search must not sort by it."""
    with postgres_database(
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0"
    ) as url:
        upgrade(url)
        yield url


def test_text_compares_by_code_point_whatever_the_database_locale(icu_database_url: str) -> None:
    with make_client(icu_database_url) as client:
        api = Api(client)
        owner = api.project()
        exp = api.experiment(owner)
        for mode in ("a", "B", "b"):
            api.run(owner, exp, {"name": mode, "params": {"mode": mode}})
        assert names(api, owner, "sort=param.mode") == ["B", "a", "b"]
        assert names(api, owner, "param.mode<a") == ["B"]
        page = api.get("/api/v1/runs?sort=param.mode&limit=1", headers=owner.headers()).json()
        rest = names(api, owner, f"sort=param.mode&cursor={page['next_cursor']}")
        assert rest == ["a", "b"]
