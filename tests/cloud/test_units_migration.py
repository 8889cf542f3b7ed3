"""Migration 0005: sensors stored with free-text units get canonical ones, each profile
version the units its values are in; what cannot be settled is reported, not guessed, and
every sensor keeps converting. On SQLite and PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from cloud.db import models
from cloud.db.engine import make_engine
from cloud.migrate import downgrade, upgrade
from hardware.thermocouple import compensated_temperature_c
from tests.cloud.conftest import Api, Identity, make_client

TC_K = {"type": "K", "cold_junction_c": 0}
T_100 = compensated_temperature_c("K", 4.096, 0.0)

#: name -> input unit, display unit, [(version, kind, payload)] as stored before 0005.
LEGACY: dict[str, tuple[str, str, list[tuple[str, str, dict[str, Any]]]]] = {
    "tc-volts": ("V", "C", [("v1", "thermocouple", TC_K), ("v2", "thermocouple", TC_K)]),
    "tc-celsius-input": ("C", "degC", [("v1", "thermocouple", TC_K)]),
    "tc-payload-f": ("millivolt", "C", [("v1", "thermocouple", {**TC_K, "display": "F"})]),
    "linear-bananas": ("bananas", "celsius", [("v1", "linear", {"a": 2.0, "b": 1.0})]),
}


def _seed_legacy(url: str, owner: uuid.UUID) -> tuple[uuid.UUID, dict[str, tuple[str, str]]]:
    """A project with the LEGACY sensors, written as the code before 0005 stored them."""
    engine = make_engine(url)
    now = datetime.now(UTC)
    project_id = uuid.uuid4()
    made: dict[str, tuple[str, str]] = {}
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(models.Project).values(
                    id=project_id, name="legacy", owner_user_id=owner, created_at=now
                )
            )
            for name, (input_unit, display_unit, versions) in LEGACY.items():
                sensor_id, token = uuid.uuid4(), f"bls_{uuid.uuid4().hex}"
                conn.execute(
                    insert(models.Sensor).values(
                        id=sensor_id,
                        project_id=project_id,
                        name=name,
                        type="temperature",
                        input_unit=input_unit,
                        display_unit=display_unit,
                        token_hash=hashlib.sha256(token.encode()).hexdigest(),
                        token_preview="bls_…",
                        token_status="active",
                        token_issued_at=now,
                        profile_version=versions[-1][0],
                        created_at=now,
                        updated_at=now,
                    )
                )
                for version, kind, payload in versions:
                    conn.execute(
                        insert(models.SensorProfile).values(
                            sensor_id=sensor_id,
                            version=version,
                            kind=kind,
                            payload=payload,
                            created_at=now,
                        )
                    )
                made[name] = (str(sensor_id), token)
    finally:
        engine.dispose()
    return project_id, made


def _units(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    S, P = models.Sensor, models.SensorProfile
    try:
        with engine.connect() as conn:
            sensors = {r.name: (r.input_unit, r.display_unit) for r in conn.execute(select(S))}
            profiles = {
                (name, version): (i, d)
                for name, version, i, d in conn.execute(
                    select(S.name, P.version, P.input_unit, P.display_unit).join(
                        S, S.id == P.sensor_id
                    )
                )
            }
    finally:
        engine.dispose()
    return {"sensors": sensors, "profiles": profiles}


def test_existing_sensors_get_canonical_units_and_keep_converting(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    downgrade(database_url, "0004")
    owner = uuid.uuid4()
    project_id, made = _seed_legacy(database_url, owner)
    capsys.readouterr()
    upgrade(database_url)
    report = capsys.readouterr().err

    got = _units(database_url)
    assert got["sensors"] == {
        "tc-volts": ("V", "°C"),
        # Parsed, but no voltage: left for the user, reported, converted as before.
        "tc-celsius-input": ("°C", "°C"),
        # Its values were always in the payload's °F, whatever the sensor said.
        "tc-payload-f": ("mV", "°F"),
        "linear-bananas": ("bananas", "°C"),  # not a unit: left as written
    }
    assert got["profiles"] == {
        ("tc-volts", "v1"): ("V", "°C"),
        ("tc-volts", "v2"): ("V", "°C"),
        ("tc-celsius-input", "v1"): ("°C", "°C"),
        ("tc-payload-f", "v1"): ("mV", "°F"),
        ("linear-bananas", "v1"): ("bananas", "°C"),
    }
    lines = {name: line for line in report.splitlines() for name in LEGACY if f"'{name}'" in line}
    assert "migration 0005" in report
    assert set(lines) == {"tc-volts", "tc-celsius-input", "tc-payload-f", "linear-bananas"}
    assert "bananas" in lines["linear-bananas"] and "left as written" in lines["linear-bananas"]
    assert "temperature" in lines["tc-celsius-input"] and "voltage" in lines["tc-celsius-input"]
    assert "wrong scale" in lines["tc-volts"]
    assert "°F" in lines["tc-payload-f"]

    # Every sensor still ingests; volts are now read as volts.
    who = Identity(str(owner), str(project_id))
    with make_client(database_url) as client:
        api = Api(client)
        run = api.run(who, api.experiment(who))
        session = api.session(who, run)
        expected = {
            "tc-volts": (0.004096, T_100),
            "tc-celsius-input": (4.096, T_100),
            "tc-payload-f": (4.096, T_100 * 9 / 5 + 32),
            "linear-bananas": (3.0, 7.0),
        }
        for name, (raw, value) in expected.items():
            sensor_id, token = made[name]
            ids = {
                "sensor_id": sensor_id,
                "token": token,
                "run_id": run,
                "capture_session_id": session,
            }
            r = api.ingest(ids, [{"timestamp": datetime.now(UTC).isoformat(), "raw_value": raw}])
            assert r.status_code == 202, (name, r.text)
            stored = api.readings(who, sensor_id=sensor_id)
            assert stored[-1]["value"] == pytest.approx(value, rel=1e-12), name
        # A sensor left with an unparseable unit is fixed by a PATCH: a new version.
        sensor_id = made["linear-bananas"][0]
        r = api.patch(
            f"/api/v1/sensors/{sensor_id}", {"input_unit": "count"}, headers=who.headers()
        )
        assert r.status_code == 200, r.text
        assert (r.json()["input_unit"], r.json()["conversion_profile"]["version"]) == (
            "count",
            "v2",
        )
    # Down and up again: the columns go and come back.
    downgrade(database_url, "0004")
    upgrade(database_url)
    assert _units(database_url)["profiles"][("tc-volts", "v1")] == ("V", "°C")
