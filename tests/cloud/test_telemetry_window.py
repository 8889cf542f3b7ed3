"""The store's read of a sensor's readings in a time range (an alarm's rate window), on
SQLite and PostgreSQL: exact to the microsecond on both sides of PostgreSQL's 2000 epoch,
values bit for bit, bounds included, other sensors' readings left out, in time order."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from cloud.store.telemetry import telemetry_store
from cloud.store.telemetry.base import in_time_order
from cloud.utctime import micros
from tests.cloud.conftest import Api

ONE_TO_ONE = {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}
#: Readings across 2000-01-01 (where PostgreSQL's binary timestamps count from), 333 us apart
#: from an odd microsecond: any rounding on the way would show.
START = datetime(1999, 12, 31, 23, 59, 59, 999_001, tzinfo=UTC)


def _sensor(api: Api) -> tuple[dict[str, str], str]:
    who = api.project()
    sensor_id, token = api.sensor(who, profile=ONE_TO_ONE)
    run_id = api.run(who, api.experiment(who))
    session_id = api.session(who, run_id)
    api.backdate(session_id, datetime(1990, 1, 1, tzinfo=UTC))
    ids = {"sensor_id": sensor_id, "token": token, "run_id": run_id,
           "capture_session_id": session_id}  # fmt: skip
    return ids, sensor_id


def test_a_window_is_exact_in_time_order_and_the_sensors_own(api: Api) -> None:
    rng = random.Random(7)
    stamps = [START + timedelta(microseconds=333 * i) for i in range(40)]
    values = [rng.uniform(-1e6, 1e6) for _ in stamps] + [0.1 + 0.2, 5e-324]
    stamps += [START + timedelta(microseconds=333 * i) for i in (40, 41)]
    readings = [{"timestamp": t.isoformat(), "raw_value": v}
                for t, v in zip(stamps, values, strict=True)]  # fmt: skip
    rng.shuffle(readings)  # stored in any order, read back in time order
    ids, sensor_id = _sensor(api)
    other, _ = _sensor(api)
    assert api.ingest(ids, readings).status_code == 202
    assert api.ingest(other, readings[:10]).status_code == 202

    with api.services.sessionmaker() as db:
        store = telemetry_store(db)
        sensor = uuid.UUID(sensor_id)
        got_ts, got_vs = store.values_between(sensor, micros(stamps[3]), micros(stamps[41]))
        nothing = store.values_between(sensor, micros(stamps[0]) - 10, micros(stamps[0]) - 1)

    assert got_ts.dtype == np.int64 and got_vs.dtype == np.float64
    assert got_ts.tolist() == [micros(t) for t in stamps[3:]]  # both bounds included
    assert got_vs.tolist() == values[3:]  # bit for bit, the subnormal too
    assert micros(START) < micros(datetime(2000, 1, 1, tzinfo=UTC)) < got_ts[-1]
    assert [len(a) for a in nothing] == [0, 0]
    assert nothing[0].dtype == np.int64 and nothing[1].dtype == np.float64


def test_readings_out_of_order_are_put_in_order() -> None:
    stamps = np.array([5, 1, 3], dtype=np.int64)
    ts, vs = in_time_order(stamps, np.array([50.0, 10.0, 30.0]))
    assert ts.tolist() == [1, 3, 5] and vs.tolist() == [10.0, 30.0, 50.0]
    ordered = np.array([1, 2], dtype=np.int64)
    assert in_time_order(ordered, np.array([1.0, 2.0]))[0] is ordered  # no copy when sorted
