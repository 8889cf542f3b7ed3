"""Profile versions apply from a time: ingest converts each reading with the version
effective at its timestamp, late readings too; a request whose readings straddle a version's
start is stored in one part per version and answered, and retried, as one request.
Every test runs on SQLite and on PostgreSQL (tests/cloud/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cloud.db import models
from cloud.db.engine import make_engine
from cloud.migrate import downgrade, upgrade
from tests.cloud.conftest import Api, Identity, assert_problem, make_client

#: The middle of a session that started at conftest's LONG_AGO.
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
V1 = {"version": "v1", "kind": "linear", "payload": {"a": 2.0, "b": 1.0}}  # the stack's
V2 = {"version": "v2", "kind": "linear", "payload": {"a": 3.0, "b": -5.0}}
P = models.SensorProfile


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def readings(*minutes: float, raw: float = 10.0) -> list[dict[str, Any]]:
    return [{"timestamp": at(m).isoformat(), "raw_value": raw + m} for m in minutes]


def set_version(
    api: Api, who: Identity, sensor_id: str, body: dict[str, Any], effective: datetime | None
) -> dict[str, Any]:
    if effective is not None:
        body = {**body, "effective_from": effective.isoformat()}
    r = api.put(f"/api/v1/sensors/{sensor_id}/conversion-profile", body, headers=who.headers())
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def stored(api: Api, who: Identity, ids: dict[str, str]) -> dict[str, tuple[float, str]]:
    """timestamp -> (value, profile_version) of every stored reading of the run."""
    rows = api.readings(who, run_id=ids["run_id"])
    return {
        datetime.fromisoformat(r["timestamp"]).isoformat(): (r["value"], r["profile_version"])
        for r in rows
    }


def v1(raw: float) -> float:
    return 2.0 * raw + 1.0


def v2(raw: float) -> float:
    return 3.0 * raw - 5.0


def expect(*pairs: tuple[float, str]) -> dict[str, tuple[float, str]]:
    """(minute, version) -> what :func:`stored` must hold for a reading sent by ``readings``."""
    out = {}
    for m, version in pairs:
        raw = 10.0 + m
        out[at(m).isoformat()] = (v1(raw) if version == "v1" else v2(raw), version)
    return out


def test_each_reading_converts_with_the_version_effective_at_its_timestamp(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    assert api.ingest(ids, readings(0, 1, 2)).status_code == 202
    # v2 from minute 5, in the middle of the session: nothing stored from then on yet.
    out = set_version(api, owner, ids["sensor_id"], V2, at(5))
    assert out["conversion_profile"]["version"] == "v2"
    assert out["readings_to_reprocess"] == 0

    r = api.ingest(ids, readings(5, 6))
    assert r.status_code == 202, r.text
    assert r.json()["profile_version"] == "v2"
    # Late: stamped before v2 took effect, sent after it was set: v1 converts it.
    r = api.ingest(ids, readings(3))
    assert r.status_code == 202, r.text
    assert r.json()["profile_version"] == "v1"
    assert stored(api, owner, ids) == expect(
        (0, "v1"), (1, "v1"), (2, "v1"), (3, "v1"), (5, "v2"), (6, "v2")
    )
    # The version's first instant is its own.
    history = api.get(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profiles", headers=owner.headers()
    ).json()["items"]
    assert [(p["version"], p["effective_from"]) for p in history] == [
        ("v1", "1970-01-01T00:00:00Z"),
        ("v2", "2024-03-01T12:05:00Z"),
    ]
    assert history[1]["created_by"] == owner.user_id


def test_a_batch_straddling_a_version_start_is_split_and_retried_as_one(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    set_version(api, owner, ids["sensor_id"], V2, at(5))
    assert api.ingest(ids, readings(6)).status_code == 202  # stored before: a copy below
    batch = readings(7, 2, 4.5, 5, 6, 1)
    first = api.ingest(ids, batch, key="straddle-1")
    assert first.status_code == 202, first.text
    answer = first.json()
    assert answer["accepted"] == 5 and answer["duplicate"] == 1 and answer["late"] == 0
    assert answer["profile_version"] == "v2"  # the newest of the request's versions
    assert answer["first_timestamp"].startswith("2024-03-01T12:01:00")
    assert answer["last_timestamp"].startswith("2024-03-01T12:07:00")
    want = expect((1, "v1"), (2, "v1"), (4.5, "v1"), (5, "v2"), (6, "v2"), (7, "v2"))
    assert stored(api, owner, ids) == want

    retry = api.ingest(ids, batch, key="straddle-1")
    assert retry.status_code == 202, retry.text
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == answer
    assert stored(api, owner, ids) == want
    # The same key with another batch is still refused.
    assert_problem(api.ingest(ids, readings(8, 1), key="straddle-1"), 422)

    # Without a key too; each part is journalled with its own version.
    r = api.ingest(ids, readings(0, 9))
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 2
    events = api.get(
        "/api/v1/events",
        params={"kind": "telemetry.ingested", "run_id": ids["run_id"]},
        headers=owner.headers(),
    ).json()["items"]
    versions = sorted(e["payload"]["profile_version"] for e in events)
    assert versions == ["v1", "v1", "v2", "v2", "v2"]
    assert stored(api, owner, ids) == {**want, **expect((0, "v1"), (9, "v2"))}


def test_versions_chain_and_late_readings_find_theirs(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    v3 = {"version": "v3", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}
    set_version(api, owner, ids["sensor_id"], V2, at(5))
    set_version(api, owner, ids["sensor_id"], v3, at(10))
    r = api.ingest(ids, readings(11, 0, 7, 10, 4.999))
    assert r.status_code == 202, r.text
    rows = stored(api, owner, ids)
    assert {k: v[1] for k, v in rows.items()} == {
        at(0).isoformat(): "v1",
        at(4.999).isoformat(): "v1",
        at(7).isoformat(): "v2",
        at(10).isoformat(): "v3",
        at(11).isoformat(): "v3",
    }
    assert rows[at(10).isoformat()][0] == 20.0 and rows[at(7).isoformat()][0] == v2(17.0)


def test_a_past_version_changes_no_stored_value_and_says_how_many_it_would(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    assert api.ingest(ids, readings(0, 1, 2, 3)).status_code == 202
    before = stored(api, owner, ids)
    out = set_version(api, owner, ids["sensor_id"], V2, at(2))
    assert out["readings_to_reprocess"] == 2  # minutes 2 and 3, stamped from then on
    assert stored(api, owner, ids) == before
    events = api.get(
        "/api/v1/events", params={"kind": "sensor.profile_changed"}, headers=owner.headers()
    ).json()["items"]
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["version"] == "v2" and payload["previous_version"] == "v1"
    assert payload["effective_from"].startswith("2024-03-01T12:02:00")
    assert payload["previous_effective_from"].startswith("1970-01-01")
    assert payload["readings_to_reprocess"] == 2
    assert events[0]["actor"] and owner.user_id in events[0]["actor"]


def test_a_version_changing_the_unit_keeps_each_reading_in_its_own(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    body = {**V2, "display_unit": "K", "payload": {"a": 1.0, "b": 273.15}}
    set_version(api, owner, ids["sensor_id"], body, at(5))
    r = api.ingest(ids, readings(4, 6), key="units")
    assert r.status_code == 202, r.text
    csv_text = api.get(
        "/api/v1/telemetry/export.csv", params={"run_id": ids["run_id"]}, headers=owner.headers()
    ).text
    lines = csv_text.strip().splitlines()
    header = lines[0].split(",")
    unit_col = header.index("value_unit")
    version_col = header.index("profile_version")
    got = [(line.split(",")[version_col], line.split(",")[unit_col]) for line in lines[1:]]
    assert sorted(got) == [("v1", "°C"), ("v2", "K")]


@pytest.mark.parametrize(
    ("effective", "status"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 409),  # the same instant as v1's
        (datetime(1969, 12, 31, tzinfo=UTC), 409),  # before the current version's
        (datetime.now(UTC) + timedelta(days=1), 422),  # in the future
    ],
)
def test_a_version_starts_after_the_current_one_and_not_in_the_future(
    api: Api, effective: datetime, status: int
) -> None:
    owner = api.project()
    sensor_id, _ = api.sensor(owner)
    r = api.put(
        f"/api/v1/sensors/{sensor_id}/conversion-profile",
        {**V2, "effective_from": effective.isoformat()},
        headers=owner.headers(),
    )
    assert_problem(r, status, "effective_from")
    # Nothing changed; a valid one is still taken after the refusal.
    set_version(api, owner, sensor_id, V2, at(0))
    r = api.put(
        f"/api/v1/sensors/{sensor_id}/conversion-profile",
        {**V2, "version": "v3", "effective_from": at(0).isoformat()},
        headers=owner.headers(),
    )
    assert_problem(r, 409, "effective_from")
    for bad in ("2024-03-01T12:00:00", "yesterday", 5):  # no offset; not a time
        r = api.put(
            f"/api/v1/sensors/{sensor_id}/conversion-profile",
            {**V2, "version": "v4", "effective_from": bad},
            headers=owner.headers(),
        )
        assert_problem(r, 422, "effective_from")


def test_a_straddling_batch_names_readings_no_version_can_convert_by_their_index(
    api: Api,
) -> None:
    owner = api.project()
    ids = api.stack(owner)
    # v2 takes raw values 0..100 only (a lookup table): a raw of 500 after minute 5 fails.
    table = {"version": "v2", "kind": "lookup_table", "payload": {"points": [[0, 0], [100, 1]]}}
    set_version(api, owner, ids["sensor_id"], table, at(5))
    batch = [
        {"timestamp": at(1).isoformat(), "raw_value": 500.0},  # v1: fine
        {"timestamp": at(6).isoformat(), "raw_value": 50.0},
        {"timestamp": at(7).isoformat(), "raw_value": 500.0},  # v2: out of its table
    ]
    body = assert_problem(api.ingest(ids, batch), 422)
    assert [e["field"] for e in body["errors"]] == ["readings.2.raw_value"]
    assert stored(api, owner, ids) == {}  # nothing of a refused request is stored
    # Without it, the rest goes in.
    assert api.ingest(ids, batch[:2]).status_code == 202
    assert len(stored(api, owner, ids)) == 2


def test_new_readings_before_a_copy_in_a_batch_are_counted(api: Api) -> None:
    """The readings a batch stores ahead of one the sensor already has are in its answer
    (SQLite once kept them without counting them: no savepoint around the insert)."""
    owner = api.project()
    ids = api.stack(owner)
    assert api.ingest(ids, readings(6)).status_code == 202
    r = api.ingest(ids, readings(7, 5, 6))
    assert r.status_code == 202, r.text
    assert (r.json()["accepted"], r.json()["duplicate"]) == (2, 1)
    assert len(stored(api, owner, ids)) == 3


def test_a_unit_change_takes_effect_from_a_time_too(api: Api) -> None:
    owner = api.project()
    ids = api.stack(owner)
    sid, h = ids["sensor_id"], owner.headers()
    body = {"display_unit": "K", "effective_from": at(5).isoformat()}
    r = api.patch(f"/api/v1/sensors/{sid}", body, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["conversion_profile"]["effective_from"] == "2024-03-01T12:05:00Z"
    assert api.ingest(ids, readings(4, 6)).status_code == 202
    assert [v for _, v in sorted(stored(api, owner, ids).values())] == ["v1", "v2"]
    # Only with a unit change; never before the current version's.
    r = api.patch(
        f"/api/v1/sensors/{sid}", {"name": "x", "effective_from": at(9).isoformat()}, headers=h
    )
    assert_problem(r, 422, "effective_from")
    body = {"display_unit": "°F", "effective_from": at(1).isoformat()}
    assert_problem(api.patch(f"/api/v1/sensors/{sid}", body, headers=h), 409, "effective_from")


def test_each_part_of_a_split_batch_is_published_with_its_version_and_unit(api: Api) -> None:
    """The live stream (an ingest listener) gets one batch per version, after the commit."""
    got: list[Any] = []
    api.services.ingest_listeners.append(got.append)
    owner = api.project()
    ids = api.stack(owner)
    body = {**V2, "display_unit": "K", "payload": {"a": 1.0, "b": 273.15}}
    set_version(api, owner, ids["sensor_id"], body, at(5))
    assert api.ingest(ids, readings(6, 4, 7)).status_code == 202
    parts = sorted(got, key=lambda b: b.first_ts)
    assert [(b.profile_version, b.display_unit, len(b.rows)) for b in parts] == [
        ("v1", "°C", 1),
        ("v2", "K", 2),
    ]
    assert len({b.batch_id for b in parts}) == 2
    assert parts[1].rows.values == [16.0 + 273.15, 17.0 + 273.15]


def test_the_migration_gives_existing_versions_their_effective_times(database_url: str) -> None:
    """Upgrading to 0014: a sensor's first version from the epoch, each later one from when
    it was set; downgrading and upgrading again is clean."""
    with make_client(database_url) as client:
        api = Api(client)
        owner = api.project()
        first, _ = api.sensor(owner)
        second, _ = api.sensor(owner)
        for v in ("v2", "v3"):
            set_version(api, owner, first, {**V2, "version": v}, None)
    downgrade(database_url, "0013")
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(P.sensor_id, P.version, P.created_at, P.effective_from).order_by(P.id)
            ).all()
    finally:
        engine.dispose()
    got = {(str(s), v): (created, effective) for s, v, created, effective in rows}
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert got[(first, "v1")][1] == epoch and got[(second, "v1")][1] == epoch
    for v in ("v2", "v3"):
        created, effective = got[(first, v)]
        assert effective == created
