"""The access model: roles, 401/403/404/422 rules, project isolation, gateway secret.

Every endpoint is called by every role and from another project; writes refused for a role
must leave nothing behind (the journal, which records every change, does not grow). Every
route the API serves is in the matrix below or in :data:`OTHER_CREDENTIALS` with the test that
holds it (:func:`test_every_route_has_a_declared_access_rule`): a new route without a declared
rule fails the suite instead of shipping untested.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.cloud.conftest import Api, Identity, assert_problem, make_client

ROLES = ("viewer", "editor", "owner")
RANK = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {sensor} {experiment} {run} {session} filled from a fresh stack
    min_role: str
    body: Callable[[Identity, dict[str, str]], Any] | None = None
    query: str = ""
    #: A change, so the journal records it (a stream ticket is not a change).
    journals: bool = True


def _profile(_: Identity, __: dict[str, str]) -> Any:
    return {"version": f"v-{uuid.uuid4().hex[:6]}", "kind": "linear", "payload": {"a": 1}}


def _annotation(_: Identity, __: dict[str, str]) -> Any:
    return {"start": datetime.now(UTC).isoformat(), "text": "door opened"}


def _calibration(_: Identity, __: dict[str, str]) -> Any:
    points = [{"value": v, "reference": v * 0.99 + 0.1 * (v % 2)} for v in (10.0, 20.0, 31.0)]
    return {"points": points, "degree": 1}


def _rule(_: Identity, __: dict[str, str]) -> Any:
    return {"kind": "above", "threshold": -1000, "for_s": 0}


def _sensor(who: Identity, _: dict[str, str]) -> Any:
    return {
        "project_id": who.project_id,
        "name": f"s-{uuid.uuid4().hex[:6]}",
        "type": "t",
        "input_unit": "mV",
        "display_unit": "C",
        "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1, "b": 0}},
    }


#: Nothing listens on the discard port: the stack's alarm is owed to it and never delivered.
WEBHOOK_URL = "http://127.0.0.1:9/benchlink"

ENDPOINTS = [
    Endpoint("GET", "/api/v1/sensors", "viewer"),
    Endpoint("GET", "/api/v1/sensors/{sensor}", "viewer"),
    Endpoint("POST", "/api/v1/sensors", "editor", _sensor),
    Endpoint("PATCH", "/api/v1/sensors/{sensor}", "editor", lambda w, i: {"type": "K"}),
    Endpoint("POST", "/api/v1/sensors/{sensor}/rotate-token", "owner"),
    Endpoint("POST", "/api/v1/sensors/{sensor}/revoke-token", "owner"),
    Endpoint("PUT", "/api/v1/sensors/{sensor}/conversion-profile", "editor", _profile),
    Endpoint("GET", "/api/v1/sensors/{sensor}/conversion-profiles", "viewer"),
    Endpoint(
        "POST",
        "/api/v1/experiments",
        "editor",
        lambda w, i: {"project_id": w.project_id, "name": "x", "tags": ["a"]},
    ),
    Endpoint("GET", "/api/v1/experiments", "viewer"),
    Endpoint("GET", "/api/v1/experiments/{experiment}", "viewer"),
    Endpoint("PATCH", "/api/v1/experiments/{experiment}", "editor", lambda w, i: {"name": "y"}),
    Endpoint("POST", "/api/v1/experiments/{experiment}/archive", "owner"),
    Endpoint("POST", "/api/v1/experiments/{experiment}/unarchive", "owner"),
    Endpoint("DELETE", "/api/v1/experiments/{idle_experiment}", "owner"),
    Endpoint("DELETE", "/api/v1/runs/{draft_run}", "owner"),
    Endpoint("GET", "/api/v1/deleted", "owner"),
    Endpoint("GET", "/api/v1/me", "viewer"),
    Endpoint("POST", "/api/v1/experiments/{experiment}/runs", "editor"),
    Endpoint("GET", "/api/v1/experiments/{experiment}/runs", "viewer"),
    Endpoint("GET", "/api/v1/experiments/{experiment}/events", "viewer"),
    Endpoint("GET", "/api/v1/runs/{run}", "viewer"),
    Endpoint("PATCH", "/api/v1/runs/{run}", "editor", lambda w, i: {"params": {"lr": 0.1}}),
    Endpoint(
        "POST",
        "/api/v1/runs:batch-status",
        "owner",
        lambda w, i: {"run_ids": [i["run"]], "status": "succeeded"},
    ),
    Endpoint(
        "POST",
        "/api/v1/runs/{run}/capture-sessions",
        "editor",
        lambda w, i: {"ordinal_number": 3, "status": "draft"},
    ),
    Endpoint("POST", "/api/v1/runs/{draft_run}/capture-sessions/{draft}/start", "editor"),
    Endpoint("GET", "/api/v1/runs/{run}/capture-sessions", "viewer"),
    Endpoint("GET", "/api/v1/runs/{run}/capture-sessions/{session}", "viewer"),
    Endpoint(
        "POST",
        "/api/v1/runs/{run}/capture-sessions/{session}/stop",
        "editor",
        lambda w, i: {"status": "succeeded"},
    ),
    Endpoint("GET", "/api/v1/capture-sessions", "viewer"),
    Endpoint(
        "POST",
        "/api/v1/runs/{run}/metrics",
        "editor",
        lambda w, i: {"metrics": [{"name": "loss", "step": 1, "value": 0.5}]},
    ),
    Endpoint("GET", "/api/v1/runs/{run}/metrics", "viewer", query="?name=loss"),
    Endpoint("GET", "/api/v1/runs/{run}/metrics/summary", "viewer"),
    Endpoint("GET", "/api/v1/runs/{run}/events", "viewer"),
    Endpoint("GET", "/api/v1/telemetry", "viewer", query="?run_id={run}"),
    Endpoint("GET", "/api/v1/telemetry/series", "viewer", query="?sensor_id={sensor}"),
    Endpoint("GET", "/api/v1/telemetry/export.csv", "viewer", query="?run_id={run}"),
    Endpoint("GET", "/api/v1/telemetry/export", "viewer", query="?format=parquet&run_id={run}"),
    Endpoint("GET", "/api/v1/runs/{run}/metrics/export", "viewer", query="?format=arrow"),
    Endpoint("GET", "/api/v1/events", "viewer"),
    Endpoint("POST", "/api/v1/runs/{run}/annotations", "editor", _annotation),
    Endpoint("GET", "/api/v1/runs/{run}/annotations", "viewer"),
    Endpoint("GET", "/api/v1/annotations/{annotation}", "viewer"),
    Endpoint("PATCH", "/api/v1/annotations/{annotation}", "editor", lambda w, i: {"text": "t"}),
    Endpoint("DELETE", "/api/v1/annotations/{annotation}", "editor"),
    Endpoint("POST", "/api/v1/sensors/{sensor}/calibrations", "editor", _calibration),
    Endpoint("GET", "/api/v1/sensors/{sensor}/calibrations", "viewer"),
    Endpoint("GET", "/api/v1/sensors/{sensor}/calibrations/{calibration}", "viewer"),
    Endpoint(
        "POST", "/api/v1/edges", "owner", lambda w, i: {"name": f"bench-{uuid.uuid4().hex[:6]}"}
    ),
    Endpoint("GET", "/api/v1/edges", "viewer"),
    Endpoint("GET", "/api/v1/edges/{edge}", "viewer"),
    Endpoint("POST", "/api/v1/edges/{edge}/rotate-token", "owner"),
    Endpoint("POST", "/api/v1/edges/{edge}/revoke-token", "owner"),
    Endpoint("POST", "/api/v1/experiments/{deleted_experiment}/restore", "owner"),
    Endpoint("POST", "/api/v1/runs/{deleted_run}/restore", "owner"),
    Endpoint("GET", "/api/v1/runs", "viewer", query="?status=running"),
    Endpoint("GET", "/api/v1/runs/compare", "viewer", query="?run_id={run}&sensor={sensor_name}"),
    Endpoint("POST", "/api/v1/stream-tickets", "viewer", journals=False),
    Endpoint("POST", "/api/v1/sensors/{sensor}/alarm-rules", "editor", _rule),
    Endpoint("GET", "/api/v1/sensors/{sensor}/alarm-rules", "viewer"),
    Endpoint("GET", "/api/v1/sensors/{sensor}/faults", "viewer"),
    Endpoint("GET", "/api/v1/sensors/{sensor}/alarm-rules/{rule}", "viewer"),
    Endpoint(
        "PATCH", "/api/v1/sensors/{sensor}/alarm-rules/{rule}", "editor", lambda w, i: {"for_s": 1}
    ),
    Endpoint("DELETE", "/api/v1/sensors/{sensor}/alarm-rules/{rule}", "editor"),
    Endpoint("GET", "/api/v1/runs/{run}/alarms", "viewer"),
    Endpoint("GET", "/api/v1/alarms", "viewer", query="?state=raised"),
    Endpoint("GET", "/api/v1/alarms/{alarm}", "viewer"),
    Endpoint("POST", "/api/v1/alarms/{alarm}/ack", "editor", lambda w, i: {"note": "seen"}),
    Endpoint("POST", "/api/v1/webhooks", "owner", lambda w, i: {"url": WEBHOOK_URL}),
    Endpoint("GET", "/api/v1/webhooks", "owner"),
    Endpoint("GET", "/api/v1/webhooks/{webhook}", "owner"),
    Endpoint("PATCH", "/api/v1/webhooks/{webhook}", "owner", lambda w, i: {"enabled": False}),
    Endpoint("POST", "/api/v1/webhooks/{webhook}/rotate-secret", "owner"),
    Endpoint("GET", "/api/v1/webhooks/{webhook}/deliveries", "owner"),
    Endpoint("DELETE", "/api/v1/webhooks/{webhook}", "owner"),
    Endpoint("GET", "/api/v1/capture-sessions/{session}/completeness", "viewer"),
    Endpoint(
        "POST",
        "/api/v1/sensors/{sensor}/reprocess",
        "editor",
        lambda w, i: {"profile_version": "v1"},
    ),
    Endpoint("GET", "/api/v1/jobs/{job}", "viewer"),
    Endpoint("GET", "/api/v1/sensors/{sensor}/jobs", "viewer"),
    # Not journaled when the job ended before the call (a race with the runner): a cancel of
    # an ended job changes nothing. tests/cloud/test_reprocess.py holds what a cancel records.
    Endpoint("POST", "/api/v1/jobs/{job}/cancel", "editor", journals=False),
    Endpoint("GET", "/api/v1/runs/{run}/completeness", "viewer", query="?sensor_id={sensor}"),
]

#: Routes not called with the identity headers' roles: who may call them, and the tests that
#: hold them to it.
OTHER_CREDENTIALS = {
    ("GET", "/api/v1/projects"): "a user (X-User-Id) without a project: test_no_endpoint_*",
    ("POST", "/api/v1/projects"): "a user (X-User-Id) without a project: test_gateway_secret",
    ("GET", "/api/v1/projects/{}"): "its members only: test_no_endpoint_reaches_*",
    ("POST", "/api/v1/telemetry"): "the sensor's own token: test_sensor_token_*, test_sensors",
    ("POST", "/api/v1/sensors/{}/faults"): "the sensor's token: test_sensor_faults.py",
    ("PUT", "/api/v1/edges/{}/heartbeat"): "the edge's own token: tests/cloud/test_edges.py",
    ("GET", "/api/v1/sensors/{}/edge-rules"): "the sensor's own token: test_edge_rules.py",
    ("GET", "/api/v1/time"): "any credential: tests/cloud/test_edges.py (clock)",
    ("GET", "/api/v1/telemetry/stream/sse"): "identity or a stream ticket: tests/live",
    ("GET", "/healthz"): "anonymous (a liveness probe; says only ok)",
    ("GET", "/readyz"): "anonymous (a readiness probe; says only whether the database answers)",
}
ADDRESSED = [e for e in ENDPOINTS if "{" in e.path]


def _stack(api: Api, who: Identity) -> dict[str, str]:
    s = api.stack(who)
    ids = {
        "sensor": s["sensor_id"],
        "experiment": s["experiment_id"],
        "run": s["run_id"],
        "session": s["capture_session_id"],
        "token": s["token"],
    }
    # A second run with a session still in draft, for the start endpoint.
    ids["draft_run"] = api.run(who, s["experiment_id"])
    ids["draft"] = api.session(who, ids["draft_run"], status="draft")
    ids["idle_experiment"] = api.experiment(who, "idle")  # nothing capturing: deletable
    ids["sensor_name"] = api.get(f"/api/v1/sensors/{ids['sensor']}", headers=who.headers()).json()[
        "name"
    ]
    ids["deleted_experiment"] = api.experiment(who, "gone")
    r = api.request(
        "DELETE", f"/api/v1/experiments/{ids['deleted_experiment']}", headers=who.headers()
    )
    assert r.status_code == 200, r.text
    ids["deleted_run"] = api.run(who, s["experiment_id"])
    r = api.request("DELETE", f"/api/v1/runs/{ids['deleted_run']}", headers=who.headers())
    assert r.status_code == 200, r.text
    r = api.post(
        f"/api/v1/runs/{s['run_id']}/annotations", _annotation(who, {}), headers=who.headers()
    )
    assert r.status_code == 201, r.text
    ids["annotation"] = r.json()["id"]
    r = api.post(
        f"/api/v1/sensors/{s['sensor_id']}/calibrations",
        _calibration(who, {}),
        headers=who.headers(),
    )
    assert r.status_code == 201, r.text
    ids["calibration"] = r.json()["id"]
    r = api.post("/api/v1/edges", {"name": f"bench-{uuid.uuid4().hex[:6]}"}, headers=who.headers())
    assert r.status_code == 201, r.text
    ids["edge"] = r.json()["edge"]["id"]
    r = api.post(
        f"/api/v1/sensors/{s['sensor_id']}/alarm-rules", _rule(who, {}), headers=who.headers()
    )
    assert r.status_code == 201, r.text
    ids["rule"] = r.json()["id"]
    r = api.post("/api/v1/webhooks", {"url": WEBHOOK_URL}, headers=who.headers())
    assert r.status_code == 201, r.text
    ids["webhook"] = r.json()["webhook"]["id"]
    ts = datetime.now(UTC).isoformat()
    assert api.ingest(s, [{"timestamp": ts, "raw_value": 1.0}]).status_code == 202
    r = api.post(
        f"/api/v1/sensors/{s['sensor_id']}/reprocess",
        {"profile_version": "v1"},
        headers=who.headers(),
    )
    assert r.status_code == 202, r.text
    ids["job"] = r.json()["id"]
    # Its end is journaled by the app's runner: waited for, so that it does not land in the
    # middle of a refused call's journal check.
    deadline = time.monotonic() + 30
    while api.get(f"/api/v1/jobs/{ids['job']}", headers=who.headers()).json()["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = api.get(f"/api/v1/runs/{s['run_id']}/alarms", headers=who.headers())
    ids["alarm"] = r.json()["items"][0]["id"]  # the rule's alarm, raised by that reading
    return ids


def _call(api: Api, e: Endpoint, who: Identity, ids: dict[str, str], role: str) -> Any:
    url = (e.path + e.query).format(**ids)
    body = e.body(who, ids) if e.body else None
    return api.request(
        e.method, url, headers=who.headers(role), **({"json": body} if body is not None else {})
    )


def _journal_size(api: Api, who: Identity) -> int:
    """The newest event id of the project: grows with every recorded change."""
    r = api.get("/api/v1/events?limit=1", headers=who.headers())
    items = r.json()["items"]
    return int(items[0]["id"]) if items else 0


def test_every_endpoint_by_every_role(api: Api) -> None:
    owner = api.project()
    ids: dict[str, str] | None = None
    for e in ENDPOINTS:
        for role in ROLES:
            # A stack is rebuilt only after a change went through: a refused call or a read
            # leaves it as it was (which the journal check below holds it to).
            if ids is None or e.path.endswith("/unarchive"):
                ids = _stack(api, owner)
            if e.path.endswith("/unarchive"):  # something to undo, else it is a no-op
                api.post(
                    f"/api/v1/experiments/{ids['experiment']}/archive", headers=owner.headers()
                )
            before = _journal_size(api, owner)
            r = _call(api, e, owner, ids, role)
            if RANK[role] < RANK[e.min_role]:
                assert_problem(r, 403)
                assert _journal_size(api, owner) == before, f"{role} {e.method} {e.path} wrote"
            else:
                assert r.status_code in (200, 201, 202, 204), (role, e.method, e.path, r.text)
                if e.method != "GET" and e.journals:
                    assert _journal_size(api, owner) > before, f"{e.method} {e.path} unjournaled"
                if e.method != "GET":
                    ids = None
            if e.method == "GET" and r.status_code == 200 and "export" not in e.path:
                assert r.json() is not None


def _route_key(method: str, path: str) -> tuple[str, str]:
    return method.upper(), re.sub(r"\{[^}]+\}", "{}", path)


def test_every_route_has_a_declared_access_rule(api: Api) -> None:
    """Every operation in the OpenAPI document is in the matrix (by role) or says which other
    credential it takes; and nothing is declared that the API does not serve."""
    served = {
        _route_key(method, path)
        for path, ops in api.c.app.openapi()["paths"].items()
        for method in ops
    }
    declared = {_route_key(e.method, e.path) for e in ENDPOINTS} | set(OTHER_CREDENTIALS)
    assert served - declared == set(), "routes without a declared access rule"
    assert declared - served == set(), "declared routes the API does not serve"


def test_no_endpoint_reaches_into_another_project(api: Api) -> None:
    alice, mallory = api.project("alice"), api.project("mallory")
    ids = _stack(api, alice)
    _stack(api, mallory)  # mallory has data of her own
    for e in ADDRESSED:
        if "{" not in e.path:  # only query-addressed: checked below
            continue
        before = _journal_size(api, alice)
        r = _call(api, e, mallory, ids, "owner")
        assert_problem(r, 404)
        assert "mallory" not in r.text and ids["token"] not in r.text
        assert _journal_size(api, alice) == before
    # Lists and query filters show only the caller's project.
    assert all(
        s["project_id"] == mallory.project_id
        for s in api.get("/api/v1/sensors", headers=mallory.headers()).json()["items"]
    )
    for path in (
        "/api/v1/telemetry?run_id={run}",
        "/api/v1/telemetry?sensor_id={sensor}",
        "/api/v1/telemetry?capture_session_id={session}",
        "/api/v1/telemetry/export.csv?run_id={run}",
        "/api/v1/telemetry/export?format=parquet&capture_session_id={session}",
        "/api/v1/events?run_id={run}",
        "/api/v1/events?experiment_id={experiment}",
        "/api/v1/capture-sessions?run_id={run}",
        "/api/v1/capture-sessions?experiment_id={experiment}",
    ):
        assert_problem(api.get(path.format(**ids), headers=mallory.headers()), 404)
    exps = api.get("/api/v1/experiments", headers=mallory.headers()).json()["items"]
    assert ids["experiment"] not in [x["id"] for x in exps]
    sessions = api.get("/api/v1/capture-sessions", headers=mallory.headers()).json()["items"]
    assert ids["session"] not in [s["id"] for s in sessions]
    # Batch status over someone else's run: per-run 404, nothing changed.
    r = api.post(
        "/api/v1/runs:batch-status",
        {"run_ids": [ids["run"]], "status": "failed"},
        headers=mallory.headers(),
    )
    assert r.status_code == 200 and r.json()["results"][0]["error"]["status"] == 404
    assert api.get(f"/api/v1/runs/{ids['run']}", headers=alice.headers()).json()["status"] == (
        "running"
    )
    # Projects themselves.
    assert_problem(api.get(f"/api/v1/projects/{alice.project_id}", headers=mallory.headers()), 404)
    listed = api.get("/api/v1/projects", headers=mallory.headers()).json()["items"]
    assert [p["id"] for p in listed] == [mallory.project_id]


def test_sensor_token_cannot_write_into_another_project(api: Api) -> None:
    alice, mallory = api.project("alice"), api.project("mallory")
    a, m = api.stack(alice), api.stack(mallory)
    ts = datetime.now(UTC).isoformat()
    crossed = {**m, "run_id": a["run_id"], "capture_session_id": a["capture_session_id"]}
    assert_problem(api.ingest(crossed, [{"timestamp": ts, "raw_value": 1}]), 404)
    # A session of another run of the same project is refused too.
    other_run = api.run(mallory, m["experiment_id"])
    other_session = api.session(mallory, other_run)
    mixed = {**m, "capture_session_id": other_session}
    assert_problem(api.ingest(mixed, [{"timestamp": ts, "raw_value": 1}]), 404)
    # Alice's token naming Mallory's sensor: the token belongs to another sensor.
    stolen = {**m, "token": a["token"]}
    assert_problem(api.ingest(stolen, [{"timestamp": ts, "raw_value": 1}]), 403)
    assert api.readings(alice, run_id=a["run_id"]) == []
    assert api.readings(mallory, run_id=m["run_id"]) == []


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({}, 401, None),
        ({"X-User-Id": "u", "X-Project-Id": "p", "X-Project-Role": "owner"}, 422, "X-User-Id"),
        ({"X-User-Id": str(uuid.uuid4()), "X-Project-Role": "owner"}, 401, None),
        ({"X-User-Id": str(uuid.uuid4()), "X-Project-Id": str(uuid.uuid4())}, 401, None),
        (
            {"X-User-Id": str(uuid.uuid4()), "X-Project-Id": "nope", "X-Project-Role": "owner"},
            422,
            "X-Project-Id",
        ),
        (
            {
                "X-User-Id": str(uuid.uuid4()),
                "X-Project-Id": str(uuid.uuid4()),
                "X-Project-Role": "admin",
            },
            422,
            "X-Project-Role",
        ),
    ],
)
def test_identity_headers(
    api: Api, headers: dict[str, str], status: int, field: str | None
) -> None:
    for path in ("/api/v1/experiments", "/api/v1/sensors", "/api/v1/events"):
        assert_problem(api.get(path, headers=headers), status, field and f"header.{field}")
    r = api.post("/api/v1/experiments", {"name": "x"}, headers=headers)
    assert_problem(r, status)


def test_body_project_must_match_header(api: Api) -> None:
    owner = api.project()
    other = str(uuid.uuid4())
    r = api.post("/api/v1/experiments", {"project_id": other, "name": "x"}, headers=owner.headers())
    assert_problem(r, 403)
    r = api.post(
        "/api/v1/sensors", {**_sensor(owner, {}), "project_id": other}, headers=owner.headers()
    )
    assert_problem(r, 403)
    assert api.get("/api/v1/experiments", headers=owner.headers()).json()["items"] == []


KEYS = (
    "sensor",
    "experiment",
    "run",
    "session",
    "draft_run",
    "draft",
    "idle_experiment",
    "deleted_experiment",
    "deleted_run",
    "annotation",
    "calibration",
    "edge",
    "rule",
    "alarm",
    "webhook",
    "job",
)


def test_unknown_ids_are_404(api: Api) -> None:
    owner = api.project()
    missing = str(uuid.uuid4())
    ids = {k: missing for k in KEYS}
    for e in ADDRESSED:
        if "{" in e.query:
            continue
        r = _call(api, e, owner, ids, "owner")
        assert_problem(r, 404)
    r = api.get("/api/v1/runs/not-a-uuid", headers=owner.headers())
    assert_problem(r, 422, "run_id")


def test_gateway_secret(database_url: str) -> None:
    with make_client(database_url, gateway_secret="s3cret") as client:
        api = Api(client)
        user = str(uuid.uuid4())
        r = api.post("/api/v1/projects", {"name": "p"}, headers={"X-User-Id": user})
        assert_problem(r, 401)
        r = api.post(
            "/api/v1/projects",
            {"name": "p"},
            headers={"X-User-Id": user, "X-Gateway-Secret": "wrong"},
        )
        assert_problem(r, 401)
        r = api.post(
            "/api/v1/projects",
            {"name": "p"},
            headers={"X-User-Id": user, "X-Gateway-Secret": "s3cret"},
        )
        assert r.status_code == 201
        who = Identity(user, r.json()["id"])
        gw = {"X-Gateway-Secret": "s3cret"}
        assert_problem(api.get("/api/v1/experiments", headers=who.headers()), 401)
        assert api.get("/api/v1/experiments", headers={**who.headers(), **gw}).status_code == 200


@pytest.fixture
def gw_api(database_url: str) -> Iterator[Api]:
    with make_client(database_url, gateway_secret="gw-secret") as client:
        yield Api(client)


def test_every_endpoint_refuses_a_caller_the_gateway_did_not_vouch_for(gw_api: Api) -> None:
    """With a gateway secret configured, every endpoint of the matrix refuses (401) a caller
    without it, with a wrong one, or without identity at all; and (400) an identity header sent
    twice, as a gateway appending its own after the client's would forward it. Nothing is
    written by any of them."""
    gw = {"X-Gateway-Secret": "gw-secret"}
    user = str(uuid.uuid4())
    r = gw_api.post("/api/v1/projects", {"name": "p"}, headers={"X-User-Id": user, **gw})
    assert r.status_code == 201, r.text
    owner = Identity(user, r.json()["id"])

    class Vouched(Identity):
        def headers(self, role: str | None = None) -> dict[str, str]:
            return {**super().headers(role), **gw}

    vouched = Vouched(owner.user_id, owner.project_id)
    ids = _stack(gw_api, vouched)
    ids["token"] = "-"
    other = str(uuid.uuid4())
    for e in ENDPOINTS:
        url = (e.path + e.query).format(**ids)
        body = e.body(vouched, ids) if e.body else None
        kw: dict[str, Any] = {"json": body} if body is not None else {}
        before = _journal_size(gw_api, vouched)
        cases: list[tuple[int, list[tuple[str, str]]]] = [
            (401, []),
            (401, list(owner.headers().items())),
            (401, [*owner.headers().items(), ("X-Gateway-Secret", "wrong")]),
            (400, [("X-Project-Id", other), *vouched.headers().items()]),
            (400, [("X-Project-Role", "owner"), *vouched.headers("viewer").items()]),
            (400, [("X-User-Id", other), *vouched.headers().items()]),
        ]
        for status, headers in cases:
            r = gw_api.c.request(e.method, url, headers=headers, **kw)
            assert r.status_code == status, (e.method, e.path, headers, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        assert _journal_size(gw_api, vouched) == before, f"{e.method} {e.path} wrote"
