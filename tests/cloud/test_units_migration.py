"""Migration 0005: sensors stored with free-text units get canonical ones, each profile
version the units its values are in; what cannot be settled is reported, not guessed, and
every sensor keeps converting. On SQLite and PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import column, insert, select, table

from cloud.db import models
from cloud.db.engine import make_engine
from cloud.db.models import Sensor, SensorProfile
from cloud.migrate import downgrade, upgrade
from hardware.thermocouple import compensated_temperature_c
from tests.cloud.conftest import Api, Identity, make_client

TC_K = {"type": "K", "cold_junction_c": 0}
T_100 = compensated_temperature_c("K", 4.096, 0.0)

#: name -> input unit, display unit, [(version, kind, payload)] as stored before 0005.
LEGACY: dict[str, tuple[str, str, list[tuple[str, str, dict[str, Any]]]]] = {
    "tc-volts": ("V", "C", [("v1", "thermocouple", TC_K), ("v2", "thermocouple", TC_K)]),
    "tc-microvolts": ("uV", "C", [("v1", "thermocouple", TC_K)]),
    "tc-celsius-input": ("C", "degC", [("v1", "thermocouple", TC_K)]),
    "tc-payload-f": ("millivolt", "C", [("v1", "thermocouple", {**TC_K, "display": "F"})]),
    "linear-bananas": ("bananas", "celsius", [("v1", "linear", {"a": 2.0, "b": 1.0})]),
}


def _seed_legacy(
    url: str,
    owner: uuid.UUID,
    legacy: dict[str, tuple[str, str, list[tuple[str, str, dict[str, Any]]]]] = LEGACY,
) -> tuple[uuid.UUID, dict[str, tuple[str, str]]]:
    """A project with the ``legacy`` sensors, written as the code before 0005 stored them."""
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
            for name, (input_unit, display_unit, versions) in legacy.items():
                sensor_id, token = uuid.uuid4(), f"bls_{uuid.uuid4().hex}"
                conn.execute(
                    insert(_as_of_0004(models.Sensor, SENSOR_COLUMNS)).values(
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
                        insert(_as_of_0004(models.SensorProfile, PROFILE_COLUMNS)).values(
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


#: The columns the tables had at 0004: the models' own inserts would also fill columns added
#: since (with their defaults), which a database at 0004 does not have.
SENSOR_COLUMNS = (
    "id", "project_id", "name", "type", "input_unit", "display_unit", "token_hash",
    "token_preview", "token_status", "token_issued_at", "profile_version", "created_at",
    "updated_at",
)  # fmt: skip
PROFILE_COLUMNS = ("sensor_id", "version", "kind", "payload", "created_at")


def _as_of_0004(model: Any, names: tuple[str, ...]) -> Any:
    t = model.__table__
    return table(t.name, *(column(n, t.c[n].type) for n in names))


def _units(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sensors = {r.name: (r.input_unit, r.display_unit) for r in conn.execute(select(Sensor))}
            profiles = {
                (name, version): (i, d)
                for name, version, i, d in conn.execute(
                    select(
                        Sensor.name,
                        SensorProfile.version,
                        SensorProfile.input_unit,
                        SensorProfile.display_unit,
                    ).join(Sensor, Sensor.id == SensorProfile.sensor_id)
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
        # Declared V, read as mV until now: a new version reads V from now on.
        "tc-volts": ("V", "°C"),
        "tc-microvolts": ("µV", "°C"),
        # No voltage: it cannot feed a thermocouple, which reads mV as before (reported).
        "tc-celsius-input": ("mV", "°C"),
        # Its values were always in the payload's °F, whatever the sensor said.
        "tc-payload-f": ("mV", "°F"),
        "linear-bananas": ("bananas", "°C"),  # not a unit: left as written
    }
    assert got["profiles"] == {
        # What their values were really computed with: mV, whatever the sensor said.
        ("tc-volts", "v1"): ("mV", "°C"),
        ("tc-volts", "v2"): ("mV", "°C"),
        ("tc-volts", "v3"): ("V", "°C"),
        ("tc-microvolts", "v1"): ("mV", "°C"),
        ("tc-microvolts", "v2"): ("µV", "°C"),
        ("tc-celsius-input", "v1"): ("mV", "°C"),
        ("tc-payload-f", "v1"): ("mV", "°F"),
        ("linear-bananas", "v1"): ("bananas", "°C"),
    }
    lines = {name: line for line in report.splitlines() for name in LEGACY if f"'{name}'" in line}
    assert "migration 0005" in report
    assert set(lines) == {
        "tc-volts",
        "tc-microvolts",
        "tc-celsius-input",
        "tc-payload-f",
        "linear-bananas",
    }
    assert "bananas" in lines["linear-bananas"] and "left as written" in lines["linear-bananas"]
    assert "temperature" in lines["tc-celsius-input"] and "voltage" in lines["tc-celsius-input"]
    assert "new version v3" in lines["tc-volts"] and "PATCH" in lines["tc-volts"]
    assert "declared µV" in lines["tc-microvolts"] and "new version v2" in lines["tc-microvolts"]
    assert "°F" in lines["tc-payload-f"]

    # Every sensor still ingests; volts are now read as volts.
    who = Identity(str(owner), str(project_id))
    with make_client(database_url) as client:
        api = Api(client)
        run = api.run(who, api.experiment(who))
        session = api.session(who, run)
        expected = {
            "tc-volts": (0.004096, T_100),
            "tc-microvolts": (4096.0, T_100),
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
    assert _units(database_url)["profiles"][("tc-volts", "v1")] == ("mV", "°C")


def _seed_readings(
    url: str, project_id: uuid.UUID, sensor_id: str, version: str, rows: list[tuple[float, float]]
) -> dict[str, str]:
    """An experiment, a run, a running capture session and (raw, value) readings stored under
    ``version``, as the code before 0005 wrote them."""
    engine = make_engine(url)
    now = datetime.now(UTC)
    ids = {"experiment": uuid.uuid4(), "run": uuid.uuid4(), "session": uuid.uuid4()}
    sensor = uuid.UUID(sensor_id)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(models.Experiment).values(
                    id=ids["experiment"], project_id=project_id, name="legacy", status="active"
                )
            )
            conn.execute(
                insert(models.Run).values(
                    id=ids["run"],
                    experiment_id=ids["experiment"],
                    project_id=project_id,
                    status="running",
                    started_at=now,
                )
            )
            conn.execute(
                insert(models.CaptureSession).values(
                    id=ids["session"],
                    run_id=ids["run"],
                    project_id=project_id,
                    ordinal_number=1,
                    status="running",
                    started_at=now,
                )
            )
            batch_id = conn.execute(
                insert(models.TelemetryBatch)
                .values(
                    sensor_id=sensor,
                    run_id=ids["run"],
                    capture_session_id=ids["session"],
                    count=len(rows),
                    late=0,
                    profile_version=version,
                    first_ts=now,
                    last_ts=now,
                )
                .returning(models.TelemetryBatch.id)
            ).scalar_one()
            for raw, value in rows:
                conn.execute(
                    insert(models.TelemetryReading).values(
                        project_id=project_id,
                        sensor_id=sensor,
                        run_id=ids["run"],
                        capture_session_id=ids["session"],
                        batch_id=batch_id,
                        ts=now,
                        raw_value=raw,
                        value=value,
                        profile_version=version,
                        late=False,
                    )
                )
    finally:
        engine.dispose()
    return {k: str(v) for k, v in ids.items()}


def _export(api: Api, who: Identity, sensor_id: str) -> list[dict[str, str]]:
    r = api.get(
        "/api/v1/telemetry/export.csv", params={"sensor_id": sensor_id}, headers=who.headers()
    )
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def _ingest_volts(
    database_url: str, who: Identity, made: tuple[str, str], ids: dict[str, str]
) -> tuple[str, list[dict[str, str]]]:
    """Send 0.004096 V (100 °C on a type K at 0 °C); the sensor's current version and its
    export after."""
    sensor_id, token = made
    with make_client(database_url) as client:
        api = Api(client)
        r = api.ingest(
            {
                "sensor_id": sensor_id,
                "token": token,
                "run_id": ids["run"],
                "capture_session_id": ids["session"],
            },
            [{"timestamp": datetime.now(UTC).isoformat(), "raw_value": 0.004096}],
        )
        assert r.status_code == 202, r.text
        r = api.get(f"/api/v1/sensors/{sensor_id}", headers=who.headers())
        assert r.status_code == 200, r.text
        return r.json()["conversion_profile"]["version"], _export(api, who, sensor_id)


def test_a_volts_thermocouple_keeps_its_mv_past_and_reads_volts_from_a_new_version(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Declared V, read as mV before 0005: the old version and its readings say mV (what they
    were computed with); a new version, current from then on, reads V."""
    downgrade(database_url, "0004")
    owner = uuid.uuid4()
    legacy = {"tc-v": ("V", "C", [("v1", "thermocouple", TC_K)])}
    project_id, made = _seed_legacy(database_url, owner, legacy)
    ids = _seed_readings(database_url, project_id, made["tc-v"][0], "v1", [(4.096, T_100)])
    capsys.readouterr()
    upgrade(database_url)
    report = capsys.readouterr().err

    assert _units(database_url)["profiles"] == {
        ("tc-v", "v1"): ("mV", "°C"),
        ("tc-v", "v2"): ("V", "°C"),
    }

    who = Identity(str(owner), str(project_id))
    version, rows = _ingest_volts(database_url, who, made["tc-v"], ids)
    assert version == "v2"
    got = [
        (r["profile_version"], r["raw_unit"], r["value_unit"], float(r["raw_value"])) for r in rows
    ]
    assert got == [("v1", "mV", "°C", 4.096), ("v2", "V", "°C", 0.004096)]
    assert float(rows[0]["value"]) == T_100  # stored, never recomputed
    assert float(rows[1]["value"]) == pytest.approx(T_100, rel=1e-9)
    assert abs(T_100 - 100.0) < 0.1  # 4.096 mV on a type K at 0 °C
    line = next(line for line in report.splitlines() if "'tc-v'" in line)
    for said in ("declared V", "as mV", "version v1", "new version v2", '"input_unit": "mV"'):
        assert said in line, (said, line)

    # Down and up again: every version keeps the units its readings were computed with, and
    # the sensor reads volts again from a version of its own.
    # Below 0005 the sensor would read mV again: under a version of its own (v3), not v2.
    downgrade(database_url, "0004")
    report = capsys.readouterr().err
    assert "'tc-v'" in report and "new version v3" in report, report
    upgrade(database_url)
    assert _units(database_url)["profiles"] == {
        ("tc-v", "v1"): ("mV", "°C"),
        ("tc-v", "v2"): ("V", "°C"),
        ("tc-v", "v3"): ("mV", "°C"),
        ("tc-v", "v4"): ("V", "°C"),
    }
    version, rows = _ingest_volts(database_url, who, made["tc-v"], ids)
    got = [(r["profile_version"], r["raw_unit"], float(r["raw_value"])) for r in rows]
    assert (version, got) == (
        "v4",
        [("v1", "mV", 4.096), ("v2", "V", 0.004096), ("v4", "V", 0.004096)],
    )
    assert float(rows[2]["value"]) == pytest.approx(T_100, rel=1e-9)
