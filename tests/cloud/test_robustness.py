"""No request, however malformed, gets a 500: fuzz every route with Hypothesis.

Bodies are arbitrary JSON (or bytes that are not JSON), path ids arbitrary strings or UUIDs,
headers valid or not. Every answer must be a 2xx/4xx, and a 4xx must be problem+json.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.migrate import upgrade
from tests.cloud.conftest import LONG_AGO, Api, Identity, make_client

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "project_id",
    "name",
    "type",
    "input_unit",
    "display_unit",
    "conversion_profile",
    "version",
    "kind",
    "payload",
    "tags",
    "status",
    "run_ids",
    "ordinal_number",
    "stopped_at",
    "metrics",
    "readings",
    "sensor_id",
    "run_id",
    "capture_session_id",
    "timestamp",
    "raw_value",
    "params",
]
shaped = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
bodies = (
    shaped.map(json.dumps)
    | json_values.map(json.dumps)
    | st.binary(max_size=64).map(lambda b: b.decode("latin-1"))
)
ROUTES = [
    ("POST", "/api/v1/projects"),
    ("POST", "/api/v1/sensors"),
    ("PATCH", "/api/v1/sensors/{id}"),
    ("PUT", "/api/v1/sensors/{id}/conversion-profile"),
    ("POST", "/api/v1/sensors/{id}/rotate-token"),
    ("POST", "/api/v1/experiments"),
    ("PATCH", "/api/v1/experiments/{id}"),
    ("POST", "/api/v1/experiments/{id}/runs"),
    ("PATCH", "/api/v1/runs/{id}"),
    ("POST", "/api/v1/runs:batch-status"),
    ("POST", "/api/v1/runs/{id}/capture-sessions"),
    ("POST", "/api/v1/runs/{id}/capture-sessions/{id}/stop"),
    ("POST", "/api/v1/runs/{id}/metrics"),
    ("POST", "/api/v1/telemetry"),
    ("GET", "/api/v1/telemetry"),
    ("GET", "/api/v1/telemetry/series"),
    ("GET", "/api/v1/experiments"),
    ("GET", "/api/v1/runs/{id}/metrics"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/projects"),
    ("GET", "/api/v1/sensors"),
    ("GET", "/api/v1/sensors/{id}/conversion-profiles"),
    ("GET", "/api/v1/runs/{id}/capture-sessions"),
    ("GET", "/api/v1/capture-sessions"),
]


@pytest.fixture(scope="module")
def fuzz_api(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Api, Identity, dict[str, str]]]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'fuzz.db'}"
    upgrade(url)
    client: TestClient
    with make_client(url) as client:
        api = Api(client)
        who = api.project()
        yield api, who, api.stack(who)


ids = st.sampled_from(["real", "random", "junk"])
query = st.dictionaries(
    st.sampled_from(
        [
            "run_id",
            "sensor_id",
            "experiment_id",
            "limit",
            "cursor",
            "since",
            "max_points",
            "name",
            "tag",
            "q",
            "status",
            "kind",
            "type",
            "token_status",
        ]
    ),
    st.text(max_size=30),
    max_size=4,
)
header_sets = st.sampled_from(["owner", "viewer", "none", "junk", "bearer"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), body=bodies, which=ids, params=query, hs=header_sets)
def test_no_request_gets_a_500(
    fuzz_api: tuple[Api, Identity, dict[str, str]],
    route: tuple[str, str],
    body: str,
    which: str,
    params: dict[str, str],
    hs: str,
) -> None:
    api, who, real = fuzz_api
    method, template = route
    ident = {"real": real["run_id"], "random": str(uuid.uuid4()), "junk": "x%20y"}[which]
    if "sensors" in template and which == "real":
        ident = real["sensor_id"]
    if "experiments/{id}" in template and which == "real":
        ident = real["experiment_id"]
    url = template.replace("{id}", ident)
    headers = {
        "owner": who.headers(),
        "viewer": who.headers("viewer"),
        "none": {},
        "junk": {"X-User-Id": "\x7f", "X-Project-Id": "1", "X-Project-Role": "god"},
        "bearer": {"Authorization": f"Bearer {real['token']}"},
    }[hs]
    kw: dict[str, object] = {
        "headers": {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    }
    if method == "GET":
        kw["params"] = params
    else:
        kw["content"] = body.encode("utf-8", "surrogatepass")
    r = api.c.request(method, url, **kw)  # type: ignore[arg-type]
    assert r.status_code < 500, (method, url, body, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text


def test_openapi_and_ops(api: Api) -> None:
    spec = api.get("/openapi.json").json()
    assert "/api/v1/telemetry" in spec["paths"] and "/api/v1/runs:batch-status" in spec["paths"]
    body = spec["paths"]["/api/v1/telemetry"]["post"]["requestBody"]["content"]["application/json"]
    assert "readings" in json.dumps(body)
    assert api.get("/docs").status_code == 200
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["status"] == "ready"
    api.project()
    text = api.get("/metrics").text
    assert (
        'benchlink_http_requests_total{method="POST",route="/api/v1/projects",status="201"}' in text
    )
    r = api.get("/api/v1/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = api.request("DELETE", "/api/v1/experiments")
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")


def test_readyz_reports_an_unreachable_database() -> None:
    # Nothing listens on port 1: the process is alive (healthz) but not ready.
    with make_client("postgresql://postgres@127.0.0.1:1/none") as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"stream_ticket_secret": "t"}, "GATEWAY_SECRET"),
        ({"gateway_secret": "g"}, "STREAM_TICKET_SECRET"),
        (
            {"gateway_secret": "g", "stream_ticket_secret": "t", "dev_identity": True},
            "DEV_IDENTITY",
        ),
    ],
)
def test_production_refuses_unsafe_settings(overrides: dict[str, object], missing: str) -> None:
    from pydantic import ValidationError

    from cloud.settings import Settings

    with pytest.raises(ValidationError, match=missing):
        Settings(environment="production", **overrides)
    Settings(environment="production", gateway_secret="g", stream_ticket_secret="t")


def _cursor(*key: object) -> str:
    from cloud.pagination import encode

    return encode(*key)


def test_inputs_that_once_caused_500s(api: Api) -> None:
    """Regressions from review: each of these was a 500 on one database or both."""
    who = api.project()
    ids = api.stack(who)
    h = who.headers()
    # Timestamps that overflow when converted to UTC.
    for stamp in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        r = api.ingest(ids, [{"timestamp": stamp, "raw_value": 1}])
        assert r.status_code == 422, r.text
        m = {"metrics": [{"name": "l", "step": 1, "value": 1, "timestamp": stamp}]}
        assert api.post(f"/api/v1/runs/{ids['run_id']}/metrics", m, headers=h).status_code == 422
        url = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}/stop"
        assert api.post(url, {"stopped_at": stamp}, headers=h).status_code == 422
        r = api.get(
            "/api/v1/telemetry", params={"run_id": ids["run_id"], "since": stamp}, headers=h
        )
        assert r.status_code == 422, r.text
    # Cursors that decode but carry the wrong types.
    for path, params in (
        ("/api/v1/experiments", {}),
        (f"/api/v1/experiments/{ids['experiment_id']}/runs", {}),
        (f"/api/v1/runs/{ids['run_id']}/metrics", {}),
        ("/api/v1/events", {}),
        ("/api/v1/telemetry", {"run_id": ids["run_id"]}),
        ("/api/v1/projects", {}),
        ("/api/v1/sensors", {}),
        (f"/api/v1/sensors/{ids['sensor_id']}/conversion-profiles", {}),
        (f"/api/v1/runs/{ids['run_id']}/capture-sessions", {}),
        ("/api/v1/capture-sessions", {}),
    ):
        for key in (
            ("x", "y"),
            (1, 2),
            ([1],),
            ("2025-01-01T00:00:00", 1),
            (2**70, 2**70, 1),
            ("x", "1", 2),
            (True,),
        ):
            r = api.get(path, params={**params, "cursor": _cursor(*key)}, headers=h)
            assert r.status_code == 422, (path, key, r.text)
    # Ids beyond 64 bits.
    assert api.get("/api/v1/events", params={"after_id": 2**63}, headers=h).status_code == 422
    # NUL characters, which PostgreSQL text and jsonb cannot store.
    r = api.post("/api/v1/experiments", {"project_id": who.project_id, "name": "a\x00b"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    r = api.ingest(
        ids, [{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 1, "meta": {"n": "\x00"}}]
    )
    assert r.status_code == 422
    assert api.get("/api/v1/experiments", params={"q": "a\x00"}, headers=h).status_code == 422
    # An escaped backslash before u0000 is not a NUL: accepted.
    r = api.post(
        "/api/v1/experiments", {"project_id": who.project_id, "name": "a\\u0000"}, headers=h
    )
    assert r.status_code == 201 and r.json()["name"] == "a\\u0000"
    # A stream ticket with non-ASCII characters.
    r = api.get("/api/v1/telemetry/stream/sse", params={"run_id": ids["run_id"], "ticket": "a.é"})
    assert r.status_code == 401
    assert api.readings(who, run_id=ids["run_id"]) == []


def test_a_huge_cold_junction_is_a_conversion_error(api: Api) -> None:
    who = api.project()
    sensor_id, token = api.sensor(
        who, {"version": "k", "kind": "thermocouple", "payload": {"type": "K"}}
    )
    run = api.run(who, api.experiment(who))
    ids = {
        "sensor_id": sensor_id,
        "token": token,
        "run_id": run,
        "capture_session_id": api.session(who, run),
    }
    api.backdate(ids["capture_session_id"], LONG_AGO)  # the reading below is from 2025
    raw = (
        '{"sensor_id":"%s","run_id":"%s","capture_session_id":"%s","readings":[{"timestamp":'
        '"2025-12-05T12:00:00Z","raw_value":1.0,"meta":{"cold_junction_c":1%s}}]}'
        % (sensor_id, run, ids["capture_session_id"], "0" * 400)
    )
    r = api.ingest(ids, [], raw=raw)
    assert r.status_code == 422 and "cold_junction_c" in r.text


def test_racing_duplicates_are_409_not_500(database_url: str) -> None:
    import threading

    with make_client(database_url) as client:
        api = Api(client)
        who = api.project()
        body = {
            "project_id": who.project_id,
            "name": "same",
            "type": "t",
            "input_unit": "mV",
            "display_unit": "C",
            "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
        }
        statuses: list[int] = []
        barrier = threading.Barrier(6)

        def register() -> None:
            barrier.wait()
            statuses.append(api.post("/api/v1/sensors", body, headers=who.headers()).status_code)

        threads = [threading.Thread(target=register) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(statuses) == [201, 409, 409, 409, 409, 409], statuses
