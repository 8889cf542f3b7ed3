"""An identity header sent twice is refused (400), on REST routes and on the live streams.

Behind a gateway that appends its own headers, the client's copy would come first; reading
the first value would let a client choose its own role or project."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import WebSocketDenialResponse

from tests.cloud.conftest import Api, Identity, assert_problem, make_client

GW = ("X-Gateway-Secret", "gw")


@pytest.fixture
def gw_api(database_url: str) -> Iterator[Api]:
    with make_client(database_url, gateway_secret="gw") as client:
        yield Api(client)


def _project(api: Api) -> Identity:
    user = str(uuid.uuid4())
    r = api.post("/api/v1/projects", {"name": "p"}, headers={"X-User-Id": user, GW[0]: GW[1]})
    assert r.status_code == 201, r.text
    return Identity(user, r.json()["id"])


def _as_gateway(who: Identity, role: str, *client_first: tuple[str, str]) -> list[tuple[str, str]]:
    """What the API receives: the client's own headers, then the gateway's appended ones."""
    return [*client_first, *who.headers(role).items(), GW]


def test_a_client_role_before_the_gateways_is_refused(gw_api: Api) -> None:
    owner = _project(gw_api)
    h = {**owner.headers(), GW[0]: GW[1]}
    r = gw_api.post("/api/v1/experiments", {"project_id": owner.project_id, "name": "e"}, headers=h)
    exp = r.json()["id"]
    forged = _as_gateway(owner, "viewer", ("X-Project-Role", "owner"))
    r = gw_api.c.post(f"/api/v1/experiments/{exp}/archive", headers=forged)
    body = assert_problem(r, 400, "header.X-Project-Role")
    assert "X-Project-Role" in body["detail"]
    assert gw_api.get(f"/api/v1/experiments/{exp}", headers=h).json()["status"] == "active"


def test_a_client_project_before_the_gateways_is_refused(gw_api: Api) -> None:
    mine, theirs = _project(gw_api), _project(gw_api)
    forged = _as_gateway(mine, "viewer", ("X-Project-Id", theirs.project_id))
    r = gw_api.c.get("/api/v1/experiments", headers=forged)
    assert_problem(r, 400, "header.X-Project-Id")
    for name, value in (
        ("X-User-Id", theirs.user_id),
        ("X-Gateway-Secret", "gw"),
    ):
        r = gw_api.c.get("/api/v1/experiments", headers=_as_gateway(mine, "viewer", (name, value)))
        assert_problem(r, 400, f"header.{name}")
    for name, value in (("Authorization", "Bearer x"), ("X-Gateway-Secret", "gw")):
        twice = _as_gateway(mine, "viewer", (name, value), (name, value))
        r = gw_api.c.get("/api/v1/experiments", headers=twice)
        assert_problem(r, 400, f"header.{name}")
    # Creating a project reads only X-User-Id: the same rule.
    r = gw_api.c.post(
        "/api/v1/projects",
        content=json.dumps({"name": "x"}),
        headers=[("X-User-Id", theirs.user_id), ("X-User-Id", mine.user_id), GW],
    )
    assert_problem(r, 400, "header.X-User-Id")


def test_a_sensor_token_sent_twice_is_refused(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    other = api.stack(owner)
    body = json.dumps(
        {
            "sensor_id": ids["sensor_id"],
            "run_id": ids["run_id"],
            "capture_session_id": ids["capture_session_id"],
            "readings": [{"timestamp": "2026-12-05T10:00:00Z", "raw_value": 1}],
        }
    )
    r = api.c.post(
        "/api/v1/telemetry",
        content=body,
        headers=[
            ("Authorization", f"Bearer {ids['token']}"),
            ("Authorization", f"Bearer {other['token']}"),
            ("Content-Type", "application/json"),
        ],
    )
    assert_problem(r, 400, "header.Authorization")


def test_streams_refuse_repeated_identity_headers(gw_api: Api) -> None:
    mine, theirs = _project(gw_api), _project(gw_api)
    sensor_id, _ = _sensor(gw_api, theirs)
    forged = _as_gateway(mine, "viewer", ("X-Project-Id", theirs.project_id))
    url = f"/api/v1/telemetry/stream/sse?sensor_id={sensor_id}"
    assert_problem(gw_api.c.get(url, headers=forged), 400, "header.X-Project-Id")
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        gw_api.c.websocket_connect(
            f"/api/v1/telemetry/stream?sensor_id={sensor_id}", headers=httpx.Headers(forged)
        ),
    ):
        pass
    assert_problem(denied.value, 400, "header.X-Project-Id")


def _sensor(api: Api, who: Identity) -> tuple[str, str]:
    r = api.c.post(
        "/api/v1/sensors",
        content=json.dumps(
            {
                "project_id": who.project_id,
                "name": "s",
                "type": "thermocouple",
                "input_unit": "mV",
                "display_unit": "C",
                "conversion_profile": {"version": "v1", "kind": "linear", "payload": {"a": 1}},
            }
        ),
        headers=[*who.headers().items(), GW, ("Content-Type", "application/json")],
    )
    assert r.status_code == 201, r.text
    return r.json()["sensor"]["id"], r.json()["token"]
