"""The claim of a batch's alarm rules on PostgreSQL reads a rate rule's window with it: the
same readings, to the microsecond at both bounds, as the evaluator's own read of the window
(``values_between``) — and no window when the batch is not newer than all the rule
evaluated (the evaluator reads it from the first reading it evaluates)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from cloud.store.alarm_claims import claim
from cloud.store.telemetry import telemetry_store
from cloud.utctime import micros
from tests.cloud.conftest import Api

T0 = datetime(2026, 3, 1, 10, 0, 0, 123_457, tzinfo=UTC)
ONE_TO_ONE = {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}}
WINDOW_US = 20_001  # window_s 0.020001: odd, so a rounding on either side would show


@dataclass
class _Batch:
    """What the claim reads of a stored batch."""

    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID


def _setup(api: Api) -> tuple[dict[str, str], _Batch]:
    who = api.project()
    sensor_id, token = api.sensor(who, profile=ONE_TO_ONE)
    run_id = api.run(who, api.experiment(who))
    session_id = api.session(who, run_id)
    api.backdate(session_id, datetime(2020, 1, 1, tzinfo=UTC))
    for rule in ({"kind": "rate", "threshold": 1e9, "window_s": WINDOW_US / 1e6},
                 {"kind": "above", "threshold": 1e9}):  # fmt: skip
        r = api.post(f"/api/v1/sensors/{sensor_id}/alarm-rules", rule, headers=who.headers())
        assert r.status_code == 201, r.text
    ids = {"sensor_id": sensor_id, "token": token, "run_id": run_id,
           "capture_session_id": session_id}  # fmt: skip
    return ids, _Batch(uuid.UUID(sensor_id), uuid.UUID(run_id), uuid.UUID(session_id))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_claim_reads_the_rate_window_as_the_evaluator_would(api: Api) -> None:
    ids, batch = _setup(api)
    # Readings 1 ms apart and one on each side of where the next batch's window begins.
    stamps = [T0 + timedelta(milliseconds=i) for i in range(40)]
    first = stamps[-1] + timedelta(milliseconds=5)
    lo = first - timedelta(microseconds=WINDOW_US)
    stamps = sorted({*stamps, lo, lo - timedelta(microseconds=1)})
    readings = [{"timestamp": t.isoformat(), "raw_value": float(k)} for k, t in enumerate(stamps)]
    assert api.ingest(ids, readings).status_code == 202
    last_us = micros(stamps[-1])

    with api.services.sessionmaker() as db:
        claimed = claim(db, batch, micros(first), micros(first) + 10, micros(first) + 20)  # type: ignore[arg-type]
        expected = telemetry_store(db).values_between(batch.sensor_id, micros(lo), last_us)
        db.rollback()
    rate, above = sorted(claimed, key=lambda c: c.kind != "rate")
    assert (rate.kind, rate.last_ts_us, above.window) == ("rate", last_us, None)
    assert rate.window is not None
    assert rate.window[0].tolist() == expected[0].tolist()
    assert rate.window[1].tolist() == expected[1].tolist()
    assert rate.window[0][0] == micros(lo)  # the lower bound included, the one before not
    assert rate.window[0][-1] == last_us

    with api.services.sessionmaker() as db:
        # a batch reaching back into what the rule evaluated: the evaluator reads the window
        overlapping = claim(db, batch, last_us, last_us + 10, last_us + 20)  # type: ignore[arg-type]
        db.rollback()
    assert [c.window for c in overlapping] == [None, None]
