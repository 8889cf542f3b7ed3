"""Sensor registration: profile validation with the field and the reason, names, PATCH."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cloud.conftest import LONG_AGO, Api, Identity, assert_problem


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


def _register(api: Api, who: Identity, profile: Any, **extra: Any) -> Any:
    body = {
        "project_id": who.project_id,
        "name": "tc-1",
        "type": "thermocouple",
        "input_unit": "mV",
        "display_unit": "C",
        "conversion_profile": profile,
        **extra,
    }
    return api.post("/api/v1/sensors", body, headers=who.headers())


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"version": "v1", "kind": "cubic", "payload": {}}, "conversion_profile.kind"),
        (
            {"version": "v1", "kind": "linear", "payload": {"a": "x"}},
            "conversion_profile.payload.a",
        ),
        ({"version": "v1", "kind": "linear", "payload": {"b": 1}}, "conversion_profile.payload.a"),
        (
            {"version": "v1", "kind": "linear", "payload": {"a": 1, "c": 2}},
            "conversion_profile.payload.c",
        ),
        (
            {"version": "v1", "kind": "polynomial", "payload": {"coefficients": []}},
            "conversion_profile.payload.coefficients",
        ),
        (
            {"version": "v1", "kind": "lookup_table", "payload": {"points": [[1, 1], [0, 2]]}},
            "conversion_profile.payload.points",
        ),
        (
            {"version": "v1", "kind": "lookup_table", "payload": {"points": [[1, 1]]}},
            "conversion_profile.payload.points",
        ),
        (
            {"version": "v1", "kind": "thermocouple", "payload": {"type": "Q"}},
            "conversion_profile.payload.type",
        ),
        ({"version": "v1", "kind": "linear", "payload": [1, 2]}, "conversion_profile.payload"),
        ({"version": "", "kind": "linear", "payload": {"a": 1}}, "conversion_profile.version"),
        ({"kind": "linear", "payload": {"a": 1}}, "conversion_profile.version"),
    ],
)
def test_invalid_profiles_name_the_field(
    api: Api, owner: Identity, profile: Any, field: str
) -> None:
    body = assert_problem(_register(api, owner, profile), 422, field)
    assert body["errors"][0]["reason"]
    assert api.get("/api/v1/sensors", headers=owner.headers()).json()["items"] == []


def test_thermocouple_profile_converts_nist(api: Api, owner: Identity) -> None:
    profile = {
        "version": "k1",
        "kind": "thermocouple",
        "payload": {"type": "K", "cold_junction_c": 0},
    }
    r = _register(api, owner, profile)
    assert r.status_code == 201, r.text
    ids = {"sensor_id": r.json()["sensor"]["id"], "token": r.json()["token"]}
    run = api.run(owner, api.experiment(owner))
    ids |= {"run_id": run, "capture_session_id": api.session(owner, run)}
    api.backdate(ids["capture_session_id"], LONG_AGO)  # the readings below are from 2025
    # NIST ITS-90 type K: 4.096 mV is 100 °C with the reference junction at 0 °C.
    r = api.ingest(ids, [{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 4.096}])
    assert r.status_code == 202, r.text
    value = api.readings(owner, run_id=run)[0]["value"]
    assert value == pytest.approx(100.0, abs=0.05)
    # An emf beyond type K's range is refused with the reason, not extrapolated.
    r = api.ingest(ids, [{"timestamp": "2025-12-05T12:00:01Z", "raw_value": 80.0}])
    assert_problem(r, 422, "readings.0.raw_value")


def test_names_are_unique_per_project_and_patch(api: Api, owner: Identity) -> None:
    profile = {"version": "v1", "kind": "linear", "payload": {"a": 1}}
    first = _register(api, owner, profile)
    assert first.status_code == 201
    assert_problem(_register(api, owner, profile), 409)
    other = api.project()
    assert _register(api, other, profile).status_code == 201  # another project may
    sid = first.json()["sensor"]["id"]
    r = api.patch(
        f"/api/v1/sensors/{sid}",
        {"name": "tc-renamed", "display_unit": "K"},
        headers=owner.headers(),
    )
    assert r.status_code == 200 and r.json()["name"] == "tc-renamed"
    assert_problem(
        api.patch(f"/api/v1/sensors/{sid}", {"token_hash": "x"}, headers=owner.headers()), 422
    )
    r = api.put(
        f"/api/v1/sensors/{sid}/conversion-profile",
        {"version": "v2", "kind": "linear", "payload": {"a": "no"}},
        headers=owner.headers(),
    )
    assert_problem(r, 422, "payload.a")
    # The token is never shown again after registration.
    got = api.get(f"/api/v1/sensors/{sid}", headers=owner.headers()).json()
    assert "token" not in got and first.json()["token"] not in str(got)
