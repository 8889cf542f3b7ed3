"""Units are checked and converted, never assumed: a sensor's input and display units are
parsed at registration, must fit its profile, are converted before and after it, and a
change of unit is a new profile version."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from hardware.thermocouple import compensated_temperature_c
from tests.cloud.conftest import Api, Identity, assert_problem

TC_K = {"version": "v1", "kind": "thermocouple", "payload": {"type": "K", "cold_junction_c": 0}}
#: NIST ITS-90 type K, reference junction at 0 °C: 4.096 mV is 100 °C (99.96).
T_100 = compensated_temperature_c("K", 4.096, 0.0)


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


def _register(
    api: Api,
    who: Identity,
    input_unit: str,
    display_unit: str = "°C",
    profile: dict[str, Any] | None = None,
    name: str | None = None,
) -> Any:
    body = {
        "project_id": who.project_id,
        "name": name or f"tc-{input_unit}-{display_unit}",
        "type": "thermocouple",
        "input_unit": input_unit,
        "display_unit": display_unit,
        "conversion_profile": profile or TC_K,
    }
    return api.post("/api/v1/sensors", body, headers=who.headers())


def _stack(api: Api, who: Identity, registered: Any) -> dict[str, str]:
    assert registered.status_code == 201, registered.text
    run = api.run(who, api.experiment(who))
    return {
        "sensor_id": registered.json()["sensor"]["id"],
        "token": registered.json()["token"],
        "run_id": run,
        "capture_session_id": api.session(who, run),
    }


def _value(api: Api, who: Identity, ids: dict[str, str], raw: float) -> float:
    # Now: inside the session, and a timestamp of its own (one reading per timestamp).
    now = datetime.now(UTC).isoformat()
    r = api.ingest(ids, [{"timestamp": now, "raw_value": raw}])
    assert r.status_code == 202, r.text
    return float(api.readings(who, run_id=ids["run_id"])[-1]["value"])


@pytest.mark.parametrize(
    ("input_unit", "raw", "stored_unit"),
    [("V", 0.004096, "V"), ("mV", 4.096, "mV"), ("uV", 4096.0, "µV"), ("µV", 4096.0, "µV")],
)
def test_a_thermocouple_read_in_any_voltage_unit_gives_the_right_temperature(
    api: Api, owner: Identity, input_unit: str, raw: float, stored_unit: str
) -> None:
    r = _register(api, owner, input_unit)
    assert r.status_code == 201, r.text
    assert r.json()["sensor"]["input_unit"] == stored_unit
    value = _value(api, owner, _stack(api, owner, r), raw)
    # Not 0.10 °C for 0.004096 V: the volts are converted to the millivolts the table wants.
    assert value == pytest.approx(T_100, rel=1e-12)


@pytest.mark.parametrize("input_unit", ["C", "°C", "degC", "K", "bar"])
def test_a_thermocouple_with_an_input_unit_of_another_dimension_is_refused(
    api: Api, owner: Identity, input_unit: str
) -> None:
    body = assert_problem(_register(api, owner, input_unit), 422, "input_unit")
    reason = body["errors"][0]["reason"]
    assert "voltage" in reason and "mV" in reason  # what it expects
    assert api.get("/api/v1/sensors", headers=owner.headers()).json()["items"] == []


def test_c_input_unit_names_celsius_in_the_refusal(api: Api, owner: Identity) -> None:
    body = assert_problem(_register(api, owner, "C"), 422, "input_unit")
    assert "°C is a temperature" in body["errors"][0]["reason"]


@pytest.mark.parametrize("spelling", ["°C", "degC", "C", "celsius", " deg C "])
def test_celsius_spellings_register_as_one_unit(api: Api, owner: Identity, spelling: str) -> None:
    r = _register(api, owner, "millivolt", spelling)
    assert r.status_code == 201, r.text
    sensor = r.json()["sensor"]
    assert (sensor["input_unit"], sensor["display_unit"]) == ("mV", "°C")
    assert sensor["conversion_profile"]["display_unit"] == "°C"
    listed = api.get("/api/v1/sensors", headers=owner.headers()).json()["items"]
    assert [s["display_unit"] for s in listed] == ["°C"]


@pytest.mark.parametrize(
    ("display", "canonical", "from_c"),
    [("F", "°F", lambda c: c * 9 / 5 + 32), ("degF", "°F", lambda c: c * 9 / 5 + 32),
     ("K", "K", lambda c: c + 273.15), ("kelvin", "K", lambda c: c + 273.15)],
)  # fmt: skip
def test_display_in_f_and_k_matches_c(
    api: Api, owner: Identity, display: str, canonical: str, from_c: Any
) -> None:
    r = _register(api, owner, "V", display)
    assert r.status_code == 201 and r.json()["sensor"]["display_unit"] == canonical
    value = _value(api, owner, _stack(api, owner, r), 0.004096)
    assert value == pytest.approx(from_c(T_100), rel=1e-12)


@pytest.mark.parametrize(
    ("input_unit", "display_unit", "field"),
    [("bananas", "°C", "input_unit"), ("mV", "mV", "display_unit"),
     ("mV", "bar", "display_unit"), ("mV", "", "display_unit")],
)  # fmt: skip
def test_units_that_do_not_parse_or_fit_are_a_422(
    api: Api, owner: Identity, input_unit: str, display_unit: str, field: str
) -> None:
    assert_problem(_register(api, owner, input_unit, display_unit), 422, field)


def test_a_profile_declares_its_units_and_the_sensor_converts_into_them(
    api: Api, owner: Identity
) -> None:
    profile = {
        "version": "v1",
        "kind": "linear",
        "payload": {"a": 25.0, "b": 0.0, "input_unit": "V", "output_unit": "bar"},
    }
    r = _register(api, owner, "mV", "kPa", profile, name="pressure")
    ids = _stack(api, owner, r)
    assert _value(api, owner, ids, 2000.0) == pytest.approx(5000.0)  # 2 V -> 50 bar
    r = _register(api, owner, "mV", "°C", profile, name="pressure-in-c")
    body = assert_problem(r, 422, "display_unit")
    assert "pressure" in body["errors"][0]["reason"]


def test_a_unit_change_is_a_new_profile_version(api: Api, owner: Identity) -> None:
    r = _register(api, owner, "mV", "C")
    ids = _stack(api, owner, r)
    sid, h = ids["sensor_id"], owner.headers()
    before = _value(api, owner, ids, 4.096)
    r = api.patch(f"/api/v1/sensors/{sid}", {"display_unit": "degF"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["display_unit"] == "°F"
    assert r.json()["conversion_profile"]["version"] == "v2"
    assert r.json()["conversion_profile"]["display_unit"] == "°F"
    after = _value(api, owner, ids, 4.096)
    assert after == pytest.approx(before * 9 / 5 + 32, rel=1e-12)
    history = api.get(f"/api/v1/sensors/{sid}/conversion-profiles", headers=h).json()["items"]
    assert [(p["version"], p["input_unit"], p["display_unit"]) for p in history] == [
        ("v1", "mV", "°C"),
        ("v2", "mV", "°F"),
    ]
    assert history[0]["payload"] == history[1]["payload"]
    # The readings keep the unit of the version that converted them.
    rows = api.readings(owner, run_id=ids["run_id"])
    assert [x["profile_version"] for x in rows] == ["v1", "v2"]
    # The same unit in another spelling is no change; a named version for an input unit.
    r = api.patch(f"/api/v1/sensors/{sid}", {"display_unit": "fahrenheit"}, headers=h)
    assert r.json()["conversion_profile"]["version"] == "v2"
    r = api.patch(
        f"/api/v1/sensors/{sid}", {"input_unit": "V", "profile_version": "volts"}, headers=h
    )
    assert r.status_code == 200, r.text
    assert (r.json()["input_unit"], r.json()["conversion_profile"]["version"]) == ("V", "volts")
    assert _value(api, owner, ids, 0.004096) == pytest.approx(after, rel=1e-12)
    # Refused: a display unit the profile cannot give; a version name already taken; a
    # version name with no unit change. Nothing changes.
    assert_problem(api.patch(f"/api/v1/sensors/{sid}", {"display_unit": "bar"}, headers=h), 422)
    r = api.patch(
        f"/api/v1/sensors/{sid}", {"display_unit": "K", "profile_version": "v1"}, headers=h
    )
    assert_problem(r, 409, "profile_version")
    r = api.patch(f"/api/v1/sensors/{sid}", {"name": "x", "profile_version": "v9"}, headers=h)
    assert_problem(r, 422, "profile_version")
    got = api.get(f"/api/v1/sensors/{sid}", headers=h).json()
    assert (got["display_unit"], got["conversion_profile"]["version"]) == ("°F", "volts")


def test_a_new_profile_version_may_bring_its_units(api: Api, owner: Identity) -> None:
    ids = _stack(api, owner, _register(api, owner, "mV", "°C"))
    sid, h = ids["sensor_id"], owner.headers()
    r = api.put(
        f"/api/v1/sensors/{sid}/conversion-profile",
        {**TC_K, "version": "v2", "input_unit": "uV", "display_unit": "K"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["input_unit"], r.json()["display_unit"]) == ("µV", "K")
    assert _value(api, owner, ids, 4096.0) == pytest.approx(T_100 + 273.15, rel=1e-12)
    r = api.put(
        f"/api/v1/sensors/{sid}/conversion-profile",
        {**TC_K, "version": "v3", "input_unit": "C"},
        headers=h,
    )
    assert_problem(r, 422, "input_unit")


def test_the_csv_export_carries_each_readings_units(api: Api, owner: Identity) -> None:
    ids = _stack(api, owner, _register(api, owner, "V", "C"))
    h = owner.headers()
    _value(api, owner, ids, 0.004096)
    r = api.patch(f"/api/v1/sensors/{ids['sensor_id']}", {"display_unit": "K"}, headers=h)
    assert r.status_code == 200, r.text
    _value(api, owner, ids, 0.004096)
    r = api.get("/api/v1/telemetry/export.csv", params={"run_id": ids["run_id"]}, headers=h)
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["raw_unit"], x["value_unit"], x["profile_version"]) for x in rows] == [
        ("V", "°C", "v1"),
        ("V", "K", "v2"),
    ]
    assert float(rows[1]["value"]) == pytest.approx(float(rows[0]["value"]) + 273.15)


MAX31855 = {"version": "v1", "kind": "thermocouple", "payload": {"type": "K", "input": "max31855"}}
TO_DBM = {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0, "output_unit": "W"}}


@pytest.mark.parametrize(
    ("input_unit", "display_unit", "profile", "field"),
    [("mV", "delta_degC", TC_K, "display_unit"), ("mV", "Δ°F", TC_K, "display_unit"),
     ("Δ°C", "°C", MAX31855, "input_unit"), ("mV", "dBm", TO_DBM, "display_unit")],
)  # fmt: skip
def test_units_of_the_same_dimension_that_do_not_convert_are_a_422(
    api: Api, owner: Identity, input_unit: str, display_unit: str, profile: Any, field: str
) -> None:
    # A temperature difference is no temperature, a level in dBm no straight line in W: both
    # are refused, not a server error and not a wrong scale.
    r = _register(api, owner, input_unit, display_unit, profile)
    body = assert_problem(r, 422, field)
    assert "does not convert" in body["errors"][0]["reason"]


def test_an_overlong_unit_in_a_payload_is_a_prompt_422(api: Api, owner: Identity) -> None:
    profile = {
        "version": "v1",
        "kind": "linear",
        "payload": {"a": 1, "b": 0, "input_unit": "m" * 5000},
    }
    body = assert_problem(_register(api, owner, "mV", "°C", profile), 422, "conversion_profile")
    assert "longer than" in body["errors"][0]["reason"]


def test_a_charge_sensor_keeps_its_unit(api: Api, owner: Identity) -> None:
    # To a lab C is °C; a coulomb is stored as "coulomb", which reads back as a charge.
    profile = {
        "version": "v1",
        "kind": "linear",
        "payload": {"a": 2.0, "b": 0.0, "output_unit": "pC"},
    }
    r = _register(api, owner, "mV", "coulomb", profile, name="charge")
    assert r.status_code == 201, r.text
    assert r.json()["sensor"]["display_unit"] == "coulomb"
    assert _value(api, owner, _stack(api, owner, r), 3.0) == pytest.approx(6e-12)
