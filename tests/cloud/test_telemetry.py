"""Telemetry ingest rules, limits and bad input; queries, downsampling and CSV export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from common.wire import MAX_READINGS_PER_BATCH
from tests.cloud.conftest import Api, Identity, assert_problem


def ts(seconds: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def owner(api: Api) -> Identity:
    return api.project()


@pytest.fixture
def ids(api: Api, owner: Identity) -> dict[str, str]:
    return api.stack(owner)


def test_values_are_converted_with_the_current_profile_version(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    assert api.ingest(ids, [{"timestamp": ts(-2), "raw_value": 3.0}]).status_code == 202
    # v2 takes effect a second later: the readings stamped from then on are its own.
    second = ts(-1)
    r = api.put(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile",
        {
            "version": "v2",
            "kind": "polynomial",
            "payload": {"coefficients": [1, 0, 1]},
            "effective_from": second,
        },
        headers=owner.headers(),
    )
    assert r.status_code == 200 and r.json()["conversion_profile"]["version"] == "v2"
    r = api.ingest(ids, [{"timestamp": second, "raw_value": 3.0}])
    assert r.status_code == 202 and r.json()["profile_version"] == "v2"
    rows = api.readings(owner, run_id=ids["run_id"])
    assert [(x["value"], x["profile_version"]) for x in rows] == [(7.0, "v1"), (10.0, "v2")]
    history = api.get(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profiles", headers=owner.headers()
    ).json()["items"]
    assert [p["version"] for p in history] == ["v1", "v2"]
    # Versions are immutable.
    r = api.put(
        f"/api/v1/sensors/{ids['sensor_id']}/conversion-profile",
        {"version": "v1", "kind": "linear", "payload": {"a": 5}},
        headers=owner.headers(),
    )
    assert_problem(r, 409, "version")


def test_tokens_rotate_and_revoke(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    old = ids["token"]
    r = api.post(f"/api/v1/sensors/{ids['sensor_id']}/rotate-token", headers=owner.headers())
    assert r.status_code == 200
    new = r.json()["token"]
    assert new != old and r.json()["sensor"]["token_preview"] == f"{new[:8]}…{new[-4:]}"
    assert_problem(api.ingest(ids, [{"timestamp": ts(), "raw_value": 1}], token=old), 401)
    assert api.ingest(ids, [{"timestamp": ts(), "raw_value": 1}], token=new).status_code == 202
    r = api.post(f"/api/v1/sensors/{ids['sensor_id']}/revoke-token", headers=owner.headers())
    assert r.status_code == 200 and r.json()["token_status"] == "revoked"
    body = assert_problem(api.ingest(ids, [{"timestamp": ts(), "raw_value": 1}], token=new), 401)
    assert new not in json.dumps(body)
    r = api.c.post("/api/v1/telemetry", content=b"{}")
    assert_problem(r, 401)  # authentication first: a body without a token is never read
    r = api.ingest(ids, [{"timestamp": ts(), "raw_value": 1}], token="bls_forged")
    assert_problem(r, 401)
    assert len(api.readings(owner, run_id=ids["run_id"])) == 1


def test_missing_bearer_is_401(api: Api, ids: dict[str, str]) -> None:
    body = {
        "sensor_id": ids["sensor_id"],
        "run_id": ids["run_id"],
        "capture_session_id": ids["capture_session_id"],
        "readings": [{"timestamp": ts(), "raw_value": 1}],
    }
    r = api.c.post("/api/v1/telemetry", json=body)
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_late_data_inside_an_ended_session_window(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    url = f"/api/v1/runs/{ids['run_id']}/capture-sessions/{ids['capture_session_id']}"
    started = datetime.fromisoformat(api.get(url, headers=owner.headers()).json()["started_at"])
    stopped = started + timedelta(seconds=30)
    r = api.post(
        url + "/stop",
        {"status": "succeeded", "stopped_at": stopped.isoformat()},
        headers=owner.headers(),
    )
    assert r.status_code == 200, r.text
    inside = [
        {"timestamp": (started + timedelta(seconds=s)).isoformat(), "raw_value": s}
        for s in (0, 10, 30)
    ]
    r = api.ingest(ids, inside)
    assert r.status_code == 202 and r.json() == {**r.json(), "accepted": 3, "late": 3}
    outside = [
        {"timestamp": (started + timedelta(seconds=5)).isoformat(), "raw_value": 1},
        {"timestamp": (stopped + timedelta(seconds=1)).isoformat(), "raw_value": 2},
    ]
    body = assert_problem(api.ingest(ids, outside), 422, "readings.1.timestamp")
    assert "window" in body["errors"][0]["reason"]
    rows = api.readings(owner, run_id=ids["run_id"])
    assert len(rows) == 3 and all(x["late"] for x in rows)


def test_draft_session_refuses_readings(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    draft = api.session(owner, ids["run_id"], ordinal=2, status="draft")
    r = api.ingest({**ids, "capture_session_id": draft}, [{"timestamp": ts(), "raw_value": 1}])
    assert_problem(r, 409)


@pytest.mark.parametrize(
    ("readings", "field"),
    [
        ([], "readings"),
        ([{"timestamp": "2025-12-05T12:00:00", "raw_value": 1}], "readings.0.timestamp"),
        ([{"timestamp": "yesterday", "raw_value": 1}], "readings.0.timestamp"),
        ([{"timestamp": "2025-12-05T12:00:00Z", "raw_value": "hot"}], "readings.0.raw_value"),
        ([{"timestamp": "2025-12-05T12:00:00Z"}], "readings.0.raw_value"),
        ([{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 1, "x": 1}], "readings.0.x"),
        ([{"timestamp": "2025-12-05T12:00:00Z", "raw_value": 1, "meta": [1]}], "readings.0.meta"),
        ("not a list", "readings"),
    ],
)
def test_bad_readings_are_422_and_nothing_is_stored(
    api: Api, owner: Identity, ids: dict[str, str], readings: object, field: str
) -> None:
    good = {"timestamp": ts(), "raw_value": 1.0}
    assert api.ingest(ids, [good]).status_code == 202
    # A bad reading after a good one: the whole batch is refused, the field names the bad one.
    shifted = isinstance(readings, list) and readings
    body = {
        "sensor_id": ids["sensor_id"],
        "run_id": ids["run_id"],
        "capture_session_id": ids["capture_session_id"],
        "readings": [good, *readings] if shifted else readings,
    }
    r = api.ingest(ids, [], raw=json.dumps(body))
    problem = assert_problem(r, 422)
    fields = [e["field"] for e in problem["errors"]]
    expected = field.replace("readings.0", "readings.1") if shifted else field
    assert any(f.startswith(expected) for f in fields), (expected, fields)
    assert len(api.readings(owner, run_id=ids["run_id"])) == 1


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_422(
    api: Api, owner: Identity, ids: dict[str, str], literal: str
) -> None:
    raw = (
        '{"sensor_id":"%s","run_id":"%s","capture_session_id":"%s","readings":'
        '[{"timestamp":"%s","raw_value":1},{"timestamp":"%s","raw_value":%s}]}'
        % (ids["sensor_id"], ids["run_id"], ids["capture_session_id"], ts(), ts(), literal)
    )
    assert_problem(api.ingest(ids, [], raw=raw), 422, "readings.1.raw_value")
    assert api.readings(owner, run_id=ids["run_id"]) == []


def test_conversion_out_of_range_is_422(api: Api, owner: Identity) -> None:
    sensor_id, token = api.sensor(
        owner, {"version": "lt", "kind": "lookup_table", "payload": {"points": [[0, 0], [10, 100]]}}
    )
    exp = api.experiment(owner)
    run = api.run(owner, exp)
    ids = {
        "sensor_id": sensor_id,
        "token": token,
        "run_id": run,
        "capture_session_id": api.session(owner, run),
    }
    r = api.ingest(ids, [{"timestamp": ts(), "raw_value": 5}, {"timestamp": ts(), "raw_value": 11}])
    assert_problem(r, 422, "readings.1.raw_value")
    assert api.ingest(ids, [{"timestamp": ts(), "raw_value": 5}]).status_code == 202
    assert [x["value"] for x in api.readings(owner, run_id=run)] == [50.0]


def test_malformed_json_and_future_timestamps(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    for raw in ("{", "[]", "null", '{"readings": 5}', "\x00\xff", ""):
        r = api.ingest(ids, [], raw=raw)
        assert_problem(r, 422)
    r = api.ingest(ids, [{"timestamp": ts(3600), "raw_value": 1}])
    assert_problem(r, 422, "readings.0.timestamp")
    assert api.readings(owner, run_id=ids["run_id"]) == []


def test_oversize_batches_are_413(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    many = [{"timestamp": ts(), "raw_value": 1.0}] * (MAX_READINGS_PER_BATCH + 1)
    assert_problem(api.ingest(ids, many), 413, "readings")
    # One reading per timestamp (copies would be dropped): a millisecond apart, in the past.
    exactly = [
        {"timestamp": ts(-i / 1000), "raw_value": 1.0} for i in range(MAX_READINGS_PER_BATCH)
    ]
    assert api.ingest(ids, exactly).status_code == 202
    huge_meta = [{"timestamp": ts(), "raw_value": 1.0, "meta": {"blob": "x" * 9_000_000}}]
    assert_problem(api.ingest(ids, huge_meta), 413)
    assert len(api.readings(owner, run_id=ids["run_id"])) == MAX_READINGS_PER_BATCH
    # Other endpoints have a smaller limit.
    r = api.post(
        "/api/v1/experiments",
        {"project_id": owner.project_id, "name": "x", "description": "y" * 2_000_000},
        headers=owner.headers(),
    )
    assert_problem(r, 413)


def test_batch_key_deduplicates_even_without_the_idempotency_record(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    """The cloud committed, the response was lost, and the idempotency record was never
    completed (a crash in between): the re-sent batch must still not be stored twice."""
    from sqlalchemy import delete

    from cloud.db.models import IdempotencyRecord

    readings = [{"timestamp": ts(-1), "raw_value": 1.0}, {"timestamp": ts(), "raw_value": 2.0}]
    first = api.ingest(ids, readings, key="batch-0001")
    assert first.status_code == 202
    with api.services.sessionmaker.begin() as db:
        db.execute(delete(IdempotencyRecord))
    again = api.ingest(ids, readings, key="batch-0001")
    assert again.status_code == 202 and again.json() == first.json()
    assert len(api.readings(owner, run_id=ids["run_id"])) == 2
    # Under another key (another edge, say): the same readings again are copies, dropped.
    other = api.ingest(ids, readings, key="batch-0002")
    assert other.status_code == 202
    assert (other.json()["accepted"], other.json()["duplicate"]) == (0, 2)
    assert len(api.readings(owner, run_id=ids["run_id"])) == 2


def test_query_pagination_filters_and_csv(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    base = datetime.now(UTC) - timedelta(minutes=10)
    readings = [
        {"timestamp": (base + timedelta(seconds=i)).isoformat(), "raw_value": float(i)}
        for i in range(250)
    ]
    # Out of order on the wire: the query answers in time order.
    assert api.ingest(ids, readings[125:]).status_code == 202
    assert api.ingest(ids, readings[:125]).status_code == 202
    seen, cursor = [], None
    while True:
        params = {"run_id": ids["run_id"], "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/telemetry", params=params, headers=owner.headers()).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [x["raw_value"] for x in seen] == [float(i) for i in range(250)]
    assert [x["value"] for x in seen] == [2.0 * i + 1 for i in range(250)]
    window = api.readings(
        owner,
        sensor_id=ids["sensor_id"],
        since=(base + timedelta(seconds=10)).isoformat(),
        until=(base + timedelta(seconds=20)).isoformat(),
    )
    assert [x["raw_value"] for x in window] == [float(i) for i in range(10, 20)]
    by_session = api.readings(owner, capture_session_id=ids["capture_session_id"])
    assert len(by_session) == 250
    assert_problem(api.get("/api/v1/telemetry", headers=owner.headers()), 422)
    assert_problem(
        api.get(
            "/api/v1/telemetry",
            params={"run_id": ids["run_id"], "cursor": "zzz"},
            headers=owner.headers(),
        ),
        422,
        "cursor",
    )
    r = api.get(
        "/api/v1/telemetry",
        params={"run_id": ids["run_id"], "since": "2025-01-01T00:00:00"},
        headers=owner.headers(),
    )
    assert_problem(r, 422, "since")
    r = api.get(
        "/api/v1/telemetry/export.csv", params={"run_id": ids["run_id"]}, headers=owner.headers()
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 250 and float(rows[7]["raw_value"]) == 7.0
    assert float(rows[7]["value"]) == 15.0


def test_series_downsampling_keeps_peaks(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    readings = [
        {
            "timestamp": (base + timedelta(seconds=i)).isoformat(),
            "raw_value": 1000.0 if i == 1234 else (-500.0 if i == 2222 else 0.0),
        }
        for i in range(3000)
    ]
    assert api.ingest(ids, readings).status_code == 202
    r = api.get(
        "/api/v1/telemetry/series",
        params={"sensor_id": ids["sensor_id"], "max_points": 100},
        headers=owner.headers(),
    )
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["downsampled"] is True and s["total"] == 3000 and len(s["points"]) <= 100
    assert sum(p["count"] for p in s["points"]) == 3000
    assert max(p["max"] for p in s["points"]) == 2001.0
    assert min(p["min"] for p in s["points"]) == -999.0
    times = [p["timestamp"] for p in s["points"]]
    assert times == sorted(times)
    small = api.get(
        "/api/v1/telemetry/series",
        params={"sensor_id": ids["sensor_id"], "max_points": 5000},
        headers=owner.headers(),
    ).json()
    assert small["downsampled"] is False and len(small["points"]) == 3000


def test_non_finite_numbers_inside_meta_and_params_are_422(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    raw = (
        '{"sensor_id":"%s","run_id":"%s","capture_session_id":"%s","readings":'
        '[{"timestamp":"%s","raw_value":1,"meta":{"deep":[1,{"x":NaN}]}}]}'
        % (ids["sensor_id"], ids["run_id"], ids["capture_session_id"], ts())
    )
    assert_problem(api.ingest(ids, [], raw=raw), 422, "readings.0.meta")
    r = api.c.post(
        f"/api/v1/experiments/{ids['experiment_id']}/runs",
        content='{"params":{"lr":Infinity}}',
        headers=owner.headers(),
    )
    assert_problem(r, 422, "params")
    assert api.readings(owner, run_id=ids["run_id"]) == []


def test_a_key_reused_for_another_batch_is_refused(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    """Even when the idempotency record is gone (token rotated: a new principal; or kept past
    its 24 h), the batch table itself knows which batch a key carried."""
    from sqlalchemy import delete

    from cloud.db.models import IdempotencyRecord

    first = [{"timestamp": ts(-1), "raw_value": 1.0}]
    assert api.ingest(ids, first, key="b-1").status_code == 202
    r = api.post(f"/api/v1/sensors/{ids['sensor_id']}/rotate-token", headers=owner.headers())
    token = r.json()["token"]
    same = api.ingest(ids, first, key="b-1", token=token)  # a new principal: no record
    assert same.status_code == 202 and same.json()["accepted"] == 1
    with api.services.sessionmaker.begin() as db:
        db.execute(delete(IdempotencyRecord))
    other = [{"timestamp": ts(-1), "raw_value": 2.0}, {"timestamp": ts(), "raw_value": 3.0}]
    assert_problem(api.ingest(ids, other, key="b-1", token=token), 422, "header.Idempotency-Key")
    assert [x["raw_value"] for x in api.readings(owner, run_id=ids["run_id"])] == [1.0]


def test_every_refused_reading_is_named(api: Api, owner: Identity, ids: dict[str, str]) -> None:
    readings = [{"timestamp": ts(3600 if i % 3 == 0 else -1), "raw_value": i} for i in range(600)]
    body = assert_problem(api.ingest(ids, readings), 422)
    named = {int(e["field"].split(".")[1]) for e in body["errors"]}
    assert named == {i for i in range(600) if i % 3 == 0}


def test_a_resent_batch_is_answered_as_a_replay(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    readings = [{"timestamp": ts(-1), "raw_value": 1.0}, {"timestamp": ts(), "raw_value": 2.0}]
    first = api.ingest(ids, readings, key="batch-7")
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = api.ingest(ids, readings, key="batch-7")
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert_problem(api.ingest(ids, readings, key="k" * 256), 422, "header.Idempotency-Key")
    assert len(api.readings(owner, run_id=ids["run_id"])) == 2


def test_racing_retries_of_one_batch_store_it_once(database_url: str) -> None:
    import threading

    from tests.cloud.conftest import make_client

    with make_client(database_url) as client:
        api = Api(client)
        owner = api.project()
        ids = api.stack(owner)
        readings = [{"timestamp": ts(-i), "raw_value": float(i)} for i in range(500)]
        results: list[int] = []
        barrier = threading.Barrier(4)

        def send() -> None:
            barrier.wait()
            results.append(api.ingest(ids, readings, key="same-batch").status_code)

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [202] * 4
        assert len(api.readings(owner, run_id=ids["run_id"])) == 500


def test_what_is_stored_reads_back_exactly(api: Api, owner: Identity) -> None:
    """Every column survives the trip, on PostgreSQL through the hand-built binary COPY
    stream: timestamps on both sides of PostgreSQL's 2000 epoch to the microsecond, extreme
    and signed floats, a long profile version in UTF-8, and meta of every JSON shape."""
    sensor_id, token = api.sensor(
        owner, {"version": "v-é" * 20, "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}
    )
    run_id = api.run(owner, api.experiment(owner))
    ids = {
        "sensor_id": sensor_id,
        "token": token,
        "run_id": run_id,
        "capture_session_id": api.session(owner, run_id),
    }
    api.backdate(ids["capture_session_id"], datetime(1900, 1, 1, tzinfo=UTC))
    sent = [
        ("1900-06-01T12:00:00.000001+00:00", -1.5e300, None),
        ("1999-12-31T23:59:59.999999+00:00", -0.0, {"cj": 25.5}),
        ("2000-01-01T00:00:00+00:00", 5e-324, {"nested": {"list": [1, 2.5, "x", None, True]}}),
        ("2000-01-01T00:00:00.000001+00:00", 1e300, {"big": 123456789012345678901234567890}),
        ("2026-01-01T10:00:00.123456+00:00", 21.25, {"text": 'ünïcødé " \\ \n'}),
        ("2026-01-01T10:00:00.123457+00:00", 0.1, {}),
    ]
    r = api.ingest(ids, [{"timestamp": t, "raw_value": v, "meta": m} for t, v, m in sent])
    assert r.status_code == 202, r.text
    got = api.readings(owner, run_id=run_id)
    assert [
        (datetime.fromisoformat(x["timestamp"]), x["raw_value"], x["value"], x["meta"]) for x in got
    ] == [(datetime.fromisoformat(t), v, v, m) for t, v, m in sent]
    assert {(x["sensor_id"], x["capture_session_id"], x["late"]) for x in got} == {
        (sensor_id, ids["capture_session_id"], False)
    }
    assert {x["profile_version"] for x in got} == {"v-é" * 20}


def test_a_key_stored_by_the_first_release_still_recognises_its_batch(
    api: Api, owner: Identity, ids: dict[str, str]
) -> None:
    """Batches stored before the fingerprint changed carry the old digest (of the wire
    model's JSON dump): a retry or an edge ``replay`` of such a batch is still a replay, and
    another batch under its key still a 422."""
    import hashlib

    from sqlalchemy import update

    from cloud.db.models import TelemetryBatch as StoredBatch
    from common.wire import TelemetryBatch

    readings = [
        {"timestamp": ts(-2), "raw_value": 1.5, "meta": {"b": 1, "a": [1.0, "é"]}},
        {"timestamp": ts(-1), "raw_value": 2.0},
    ]
    assert api.ingest(ids, readings, key="old-1").status_code == 202
    body = json.dumps({**{k: ids[k] for k in ("sensor_id", "run_id", "capture_session_id")}})
    model = TelemetryBatch.model_validate_json(body[:-1] + f',"readings":{json.dumps(readings)}}}')
    legacy = hashlib.sha256(model.model_dump_json().encode()).hexdigest()  # as 0.1 stored it
    with api.services.sessionmaker.begin() as db:
        db.execute(update(StoredBatch).values(fingerprint=legacy))
    again = api.ingest(ids, readings, key="old-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    other = [{**readings[0], "raw_value": 9.0}, readings[1]]
    assert_problem(api.ingest(ids, other, key="old-1"), 422, "header.Idempotency-Key")
    assert [x["raw_value"] for x in api.readings(owner, run_id=ids["run_id"])] == [1.5, 2.0]


def test_meta_key_order_does_not_make_another_batch(api: Api, ids: dict[str, str]) -> None:
    first = [{"timestamp": ts(-1), "raw_value": 1.0, "meta": {"a": 1, "b": {"c": 2, "d": 3}}}]
    again = [
        {
            "timestamp": first[0]["timestamp"],
            "raw_value": 1.0,
            "meta": {"b": {"d": 3, "c": 2}, "a": 1},
        }
    ]
    assert api.ingest(ids, first, key="k").status_code == 202
    r = api.ingest(ids, again, key="k")
    assert r.status_code == 202 and r.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    ("depth", "field"),
    [(32, None), (33, "readings.0.meta"), (300, "readings.0.meta"), (5000, "body")],
)
def test_meta_nests_at_most_32_levels_and_never_a_500(
    api: Api, owner: Identity, ids: dict[str, str], depth: int, field: str | None
) -> None:
    """Deeper metas were stored and then failed to serialize on every read (a 500), and at
    Python's recursion limit the parse itself was a 500. Now one limit, on both parse paths."""
    meta = '{"x":' * depth + "1" + "}" * depth
    raw = (
        json.dumps({k: ids[k] for k in ("sensor_id", "run_id", "capture_session_id")})[:-1]
        + f',"readings":[{{"timestamp":"{ts(-1)}","raw_value":1.0,"meta":{meta}}}]}}'
    )
    r = api.ingest(ids, [], raw=raw)
    if field is None:
        assert r.status_code == 202, r.text
        assert len(api.readings(owner, run_id=ids["run_id"])) == 1  # and it reads back
    else:
        assert_problem(r, 422, field)
        assert api.readings(owner, run_id=ids["run_id"]) == []


def test_a_lone_surrogate_in_meta_is_422_not_500(api: Api, ids: dict[str, str]) -> None:
    r = api.ingest(ids, [{"timestamp": ts(-1), "raw_value": 1.0, "meta": {"s": "\ud800"}}])
    assert_problem(r, 422, "readings.0.meta")
    emoji = api.ingest(ids, [{"timestamp": ts(-1), "raw_value": 1.0, "meta": {"s": "\U0001f600"}}])
    assert emoji.status_code == 202, emoji.text
