"""Alarm rules cached in the buffer and evaluated at its group commit (edge.buffer.alarms):
the cloud's evaluator on the value the cloud will store, state that survives a restart,
rules replaced by a later pull, a run's rule over the sensor's, stale by the edge's clock."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.edge_rules import EdgeProfile, EdgeRule, EdgeRules
from edge.buffer import Buffer, NewReading, Write

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
#: raw mV -> display: 2 * raw + 1
PROFILE = EdgeProfile(
    version="1",
    kind="linear",
    payload={"a": 2.0, "b": 1.0},
    input_unit="mV",
    display_unit="C",
    effective_from=datetime(1970, 1, 1, tzinfo=UTC),
)


def rule(kind: str = "above", **fields: Any) -> EdgeRule:
    return EdgeRule(id=uuid.uuid4(), kind=kind, **fields)  # type: ignore[arg-type]


def pulled(sid: str, *rules: EdgeRule) -> EdgeRules:
    return EdgeRules(
        sensor_id=uuid.UUID(sid), display_unit="C", profiles=[PROFILE], rules=list(rules)
    )


def capture(buf: Buffer, sid: str, raws: list[float], start_s: float = 0.0) -> None:
    """One reading a second from ``start_s`` on, committed in one group."""
    buf.commit(
        [
            Write([NewReading(sid, T0 + timedelta(seconds=start_s + i), raw)])
            for i, raw in enumerate(raws)
        ]
    )


def alarms(buf: Buffer) -> list[tuple[Any, ...]]:
    return buf.conn.execute(
        "SELECT rule_id, raised_at, value, cleared_at, cleared_value FROM edge_alarms ORDER BY id"
    ).fetchall()


def at(second: float) -> str:
    return (T0 + timedelta(seconds=second)).isoformat(timespec="microseconds")


def test_hold_and_hysteresis_on_the_converted_value_across_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "buffer.db"
    buf = Buffer(path)
    sid = str(uuid.uuid4())
    buf.upsert_sensor(sid, "t", "mqtt", str(uuid.uuid4()), str(uuid.uuid4()))
    r = rule(threshold=20.0, for_s=2.0, hysteresis=4.0)
    assert buf.set_rules(sid, pulled(sid, r)) == 1
    caplog.set_level(logging.INFO, "benchlink.edge.alarms")
    # 2*raw + 1: 11, 21, 23 -- holding since second 1, not yet 2 s
    capture(buf, sid, [5.0, 10.0, 11.0])
    assert alarms(buf) == []
    buf.close()

    buf = Buffer(path)  # a restart: the hold goes on from the buffer's state
    try:
        capture(buf, sid, [12.0, 9.0, 8.0], start_s=3)  # 25 (held 2 s: raised), 19, 17
        capture(buf, sid, [7.0], start_s=6)  # 15 < 20 - 4: cleared
        assert alarms(buf) == [(str(r.id), at(3), 25.0, at(6), 15.0)]
        assert buf.alarm_report()["in_force"] == []
    finally:
        buf.close()
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "benchlink.edge.alarms"]
    assert lines == [
        f"alarm raised at the edge: sensor {sid} rule {r.id} (above threshold=20 for_s=2"
        f" hysteresis=4) value 25 at {at(3)}",
        f"alarm cleared at the edge: sensor {sid} rule {r.id} (above threshold=20 for_s=2"
        f" hysteresis=4) value 15 at {at(6)}",
    ]


def test_a_runs_rule_replaces_the_sensors_and_a_later_pull_replaces_both(
    buffer: Buffer, sensor: str
) -> None:
    run = buffer.sensors()[0]["run_id"]
    mine = rule(threshold=100.0, run_id=uuid.UUID(run))
    sensor_wide = rule(threshold=0.0)
    other_run = rule("below", threshold=0.0, run_id=uuid.uuid4())
    buffer.set_rules(sensor, pulled(sensor, sensor_wide, mine, other_run))
    capture(buffer, sensor, [10.0, 60.0])  # 21 (under the run's 100), 121
    assert [(a[0], a[2]) for a in alarms(buffer)] == [(str(mine.id), 121.0)]

    # the cloud deleted the run's rule: its alarm clears; the sensor's applies from now on
    buffer.set_rules(sensor, pulled(sensor, sensor_wide))
    (gone,) = buffer.alarm_report()["recent"]
    assert gone["rule_id"] == str(mine.id) and gone["cleared_value"] is None
    capture(buffer, sensor, [1.0], start_s=2)
    (now,) = buffer.alarm_report()["in_force"]
    assert (now["rule_id"], now["value"], now["raised_at"]) == (str(sensor_wide.id), 3.0, at(2))


def test_without_rules_or_profile_nothing_is_evaluated(buffer: Buffer, sensor: str) -> None:
    capture(buffer, sensor, [100.0])
    buffer.set_rules(sensor, EdgeRules(sensor_id=uuid.UUID(sensor), rules=[rule(threshold=0.0)]))
    capture(buffer, sensor, [100.0], start_s=1)  # no profile: the cloud's value is unknown
    assert alarms(buffer) == []
    assert buffer.alarm_report()["rules"][sensor]["rules"] == 1


def test_each_reading_converts_by_the_profile_version_of_its_timestamp(
    buffer: Buffer, sensor: str
) -> None:
    """v1 (°F, before the rules' unit changed: not evaluated), v2 from second 10 (2x + 1 °C),
    v3 from second 20 (x °C): the cloud converts a reading by its timestamp, so does the edge."""
    start = datetime(1970, 1, 1, tzinfo=UTC)
    versions = [
        PROFILE.model_copy(update={"version": "1", "display_unit": "F", "effective_from": start}),
        PROFILE.model_copy(update={"version": "2", "effective_from": T0 + timedelta(seconds=10)}),
        PROFILE.model_copy(
            update={
                "version": "3",
                "payload": {"a": 1.0},
                "effective_from": T0 + timedelta(seconds=20),
            }
        ),
    ]
    above = rule(threshold=50.0, hysteresis=1.0)
    rules = EdgeRules(
        sensor_id=uuid.UUID(sensor), display_unit="C", profiles=versions, rules=[above]
    )
    buffer.set_rules(sensor, rules)
    capture(buffer, sensor, [100.0], start_s=5)  # v1, in °F: not evaluated
    assert alarms(buffer) == []
    capture(buffer, sensor, [30.0, 10.0], start_s=15)  # v2: 61 (raised), 21 (cleared)
    capture(buffer, sensor, [60.0], start_s=20)  # v3: 60 (raised)
    assert [(a[1], a[2], a[4]) for a in alarms(buffer)] == [
        (at(15), 61.0, 21.0),
        (at(20), 60.0, None),
    ]


def test_rate_looks_back_over_stored_readings_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    sid = str(uuid.uuid4())
    buf = Buffer(path)
    buf.upsert_sensor(sid, "t", "mqtt", str(uuid.uuid4()), str(uuid.uuid4()))
    buf.set_rules(sid, pulled(sid, rule("rate", threshold=5.0, window_s=10.0)))
    capture(buf, sid, [0.0, 1.0])  # 1, 3: 2 °C/s
    buf.close()
    buf = Buffer(path)
    try:
        capture(buf, sid, [10.0], start_s=2)  # 21: from 1 two seconds before, 10 °C/s
        assert [(a[1], a[2]) for a in alarms(buf)] == [(at(2), 21.0)]
    finally:
        buf.close()


def test_stale_by_the_edges_clock(buffer: Buffer, sensor: str) -> None:
    r = rule("stale", after_s=0.2)
    buffer.set_rules(sensor, pulled(sensor, r))
    assert buffer.stale_tick() == 0  # nothing stored yet: no silence to measure
    capture(buffer, sensor, [1.0])
    assert buffer.stale_tick() == 0
    time.sleep(0.3)
    assert buffer.stale_tick() == 1
    assert buffer.stale_tick() == 0  # raised once
    (a,) = buffer.alarm_report()["in_force"]
    assert a["kind"] == "stale" and a["value"] is None
    capture(buffer, sensor, [1.0], start_s=1)  # it speaks again
    assert buffer.alarm_report()["in_force"] == []


def test_a_rolled_back_commit_leaves_the_state_of_the_last_commit(
    buffer: Buffer, sensor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer.set_rules(sensor, pulled(sensor, rule(threshold=20.0)))
    real = buffer.alarms.after_writes

    def then_fail(*args: Any) -> Any:
        real(*args)  # evaluated (in memory: raised), then the transaction fails
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(buffer.alarms, "after_writes", then_fail)
    with pytest.raises(sqlite3.OperationalError):
        capture(buffer, sensor, [50.0])
    monkeypatch.undo()
    assert alarms(buffer) == []
    capture(buffer, sensor, [50.0])  # committed this time: raised now, once
    assert [a[2] for a in alarms(buffer)] == [101.0]


def test_a_sensor_gone_from_the_config_keeps_no_rules_and_raises_nothing(
    buffer: Buffer, sensor: str
) -> None:
    """Rules cached for a sensor the edge no longer reads (taken out of its config) are
    dropped when the daemon starts: its alarms in force clear, and its ``stale`` rule does not
    raise for a sensor that is merely gone."""
    buffer.set_rules(sensor, pulled(sensor, rule("stale", after_s=0.2), rule(threshold=20.0)))
    capture(buffer, sensor, [50.0])  # 101 > 20: raised
    assert len(buffer.alarm_report()["in_force"]) == 1
    assert buffer.keep_rules_of([sensor]) == []  # still configured: nothing changes
    assert buffer.keep_rules_of([str(uuid.uuid4())]) == [sensor]
    time.sleep(0.3)
    assert buffer.stale_tick() == 0
    report = buffer.alarm_report()
    assert report["rules"] == {} and report["in_force"] == []
    why = buffer.conn.execute("SELECT cleared_why FROM edge_alarms").fetchall()
    assert why == [("sensor removed from this edge's config",)]
    assert buffer.keep_rules_of([]) == []  # nothing left to drop
