"""A sensor's device faults (an open or shorted probe), sent by its edge with the sensor's
token as episodes (:mod:`common.faults`), stored, journaled and evaluated by the sensor's
``fault`` alarm rules.

Storing
    An episode is keyed by (sensor, the sender's episode id) and only grows: its
    ``last_ts`` and ``count`` move forward, the rest must stay what it was (another kind,
    first time, run or session under the same id is a 422 naming ``episode_id``). So a
    repeat -- a retry after a lost answer -- stores nothing and evaluates nothing. A new
    episode is a ``sensor.fault`` event in the journal; its growth is not (one event per
    fault would be 36,000 an hour for an open probe at 10 Hz).

Evaluating
    A fault holds a ``fault`` rule's condition from the episode's first fault to its last
    (the probe reported nothing else meanwhile), so the episode is evaluated as faults at
    its first time, at its first time plus the rule's ``for_s`` when that falls inside it,
    and at its last time -- the points where the pure evaluator
    (:func:`common.alarm_eval.evaluate`) can change its decision. The alarm is
    raised at the fault's time (late, like a reading's, when that is more than
    :data:`~cloud.services.alarm_evaluation.LATE_AFTER_S` ago or the session has ended);
    the rule's state (``last_ts_us``, ``holding_since_us``, ``open_alarm_id``) moves on as
    with readings, under the same row lock, and the sensor's next reading without a fault
    clears the alarm (:mod:`cloud.services.alarm_evaluation`). Parts of an episode at or
    before the newest time a rule has evaluated are not evaluated by it (out of order, as
    for readings); the edge sends a sensor's faults before its later readings for that.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from cloud import utctime
from cloud.db import models
from cloud.errors import Conflict, FieldError, InvalidInput, NotFound, invalid
from cloud.services import journal
from cloud.services.alarm_evaluation import LATE_AFTER_S
from cloud.services.alarm_lifecycle import raise_alarm
from cloud.services.alarm_rules import rule_dict, spec_of
from cloud.services.ingest_context import authenticate
from cloud.store.telemetry.base import at
from common.alarm_eval import State, evaluate
from common.faults import FaultEpisode, FaultStored

AR, SF = models.AlarmRule, models.SensorFault
_LATE_US = int(LATE_AFTER_S * 1_000_000)


@dataclass(frozen=True)
class Recorded:
    """What :func:`record` did: the answer, and the alarm transitions (live messages)."""

    answer: FaultStored
    alarms: list[dict[str, Any]]


def record(
    db: Session,
    token: str,
    sensor_id: uuid.UUID,
    body: FaultEpisode,
    now: datetime,
    future: timedelta,
    skew: timedelta,
) -> Recorded:
    """Store the episode (or its growth) and evaluate what is new of it."""
    sensor = authenticate(db, token, sensor_id)
    run, session = _run_and_session(db, sensor, body)
    late = _window(session, body, now, future, skew)
    key = (sensor.id, body.episode_id)
    stored = db.get(SF, key, with_for_update=True)
    if stored is None:
        stored = _insert(db, sensor, body, now, late)
        if stored is not None:
            _journal(db, sensor, run, session, body, late)
            return Recorded(answer(stored, "new"), evaluate_episode(db, stored, now))
        # a request racing this one (a retry) stored it first: this one is an update of it
        stored = db.get(SF, key, with_for_update=True, populate_existing=True)
        assert stored is not None
    _same_episode(stored, body)
    last = body.last_timestamp
    if last <= stored.last_ts and body.count <= stored.count:
        return Recorded(answer(stored, "unchanged"), [])
    stored.last_ts, stored.count = max(stored.last_ts, last), max(stored.count, body.count)
    stored.updated_at = now
    return Recorded(answer(stored, "grown"), evaluate_episode(db, stored, now))


def _journal(
    db: Session,
    sensor: models.Sensor,
    run: models.Run,
    session: models.CaptureSession,
    body: FaultEpisode,
    late: bool,
) -> None:
    journal.record(
        db,
        "sensor.fault",
        project_id=sensor.project_id,
        actor=f"sensor:{sensor.id}",
        experiment_id=run.experiment_id,
        run_id=run.id,
        capture_session_id=session.id,
        sensor_id=sensor.id,
        episode_id=body.episode_id,
        fault_kind=body.kind,
        first_timestamp=body.first_timestamp,
        detail=body.detail,
        late=late,
    )


def _run_and_session(
    db: Session, sensor: models.Sensor, body: FaultEpisode
) -> tuple[models.Run, models.CaptureSession]:
    run = db.get(models.Run, body.run_id)
    if run is None or run.project_id != sensor.project_id or run.deleted_at is not None:
        raise NotFound(f"run {body.run_id} not found", errors=[FieldError("run_id", "not found")])
    session = db.get(models.CaptureSession, body.capture_session_id)
    if session is None or session.run_id != run.id:
        raise NotFound(
            f"capture session {body.capture_session_id} not found in run {run.id}",
            errors=[FieldError("capture_session_id", "not found in the run")],
        )
    if session.status == "draft":
        raise Conflict(f"capture session {session.id} has not started (draft); start it first")
    return run, session


def _window(
    session: models.CaptureSession,
    body: FaultEpisode,
    now: datetime,
    future: timedelta,
    skew: timedelta,
) -> bool:
    """Whether the episode is late (its session has ended); a 422 naming the time outside
    the session's window (as for readings: from its start minus ``skew`` to now plus
    ``future`` while it runs, to its stop once it ended) or out of order."""
    if body.last_timestamp < body.first_timestamp:
        raise invalid("last_timestamp", "is before first_timestamp")
    assert session.started_at is not None
    earliest = session.started_at - skew
    running = session.status == "running"
    latest = now + future if running else session.stopped_at
    assert latest is not None
    if body.first_timestamp < earliest:
        raise invalid(
            "first_timestamp",
            f"is before its capture session started ({session.started_at.isoformat()});"
            f" faults from {earliest.isoformat()} on are accepted",
        )
    if body.last_timestamp > latest:
        why = "is in the future" if running else f"is after its capture session ended ({latest})"
        raise invalid("last_timestamp", why)
    return not running


def _insert(
    db: Session, sensor: models.Sensor, body: FaultEpisode, now: datetime, late: bool
) -> models.SensorFault | None:
    """The new episode's row; None when another request stored it first."""
    row = SF(
        sensor_id=sensor.id,
        episode_id=body.episode_id,
        project_id=sensor.project_id,
        run_id=body.run_id,
        capture_session_id=body.capture_session_id,
        kind=body.kind,
        detail=body.detail,
        first_ts=body.first_timestamp,
        last_ts=body.last_timestamp,
        count=body.count,
        late=late,
        received_at=now,
        updated_at=now,
    )
    try:
        with db.begin_nested():
            db.add(row)
            db.flush()
    except IntegrityError:  # the same episode stored by a request racing this one
        return None
    return row


def _same_episode(stored: models.SensorFault, body: FaultEpisode) -> None:
    """An episode id names one episode: its kind, start, run and session never change."""
    same = (
        stored.kind == body.kind
        and stored.first_ts == body.first_timestamp
        and stored.run_id == body.run_id
        and stored.capture_session_id == body.capture_session_id
    )
    if not same:
        raise InvalidInput(
            "this episode_id already names another fault episode of this sensor",
            errors=[FieldError("episode_id", "already names another episode (kind, start, run)")],
        )


def answer(row: models.SensorFault, what: str) -> FaultStored:
    return FaultStored(
        episode_id=row.episode_id,
        sensor_id=row.sensor_id,
        kind=row.kind,
        first_timestamp=row.first_ts,
        last_timestamp=row.last_ts,
        count=row.count,
        stored=what,
    )


def evaluate_episode(db: Session, fault: models.SensorFault, now: datetime) -> list[dict[str, Any]]:
    """Run the episode through the sensor's ``fault`` rules that apply to its run (locked
    to the commit, in id order like ingest's); the alarm transitions as live messages."""
    first_us, last_us = utctime.micros(fault.first_ts), utctime.micros(fault.last_ts)
    now_us = utctime.micros(now)
    messages: list[dict[str, Any]] = []
    for rule in _fault_rules(db, fault):
        hold_us = first_us + int((rule.for_s or 0.0) * 1_000_000)
        points = sorted({first_us, last_us, *([hold_us] if hold_us <= last_us else [])})
        if rule.last_ts_us is not None:
            points = [t for t in points if t > rule.last_ts_us]
        if not points:
            continue
        state = State(rule.last_ts_us, rule.holding_since_us, rule.open_alarm_id is not None)
        metas = [{"fault": fault.kind}] * len(points)
        for change in evaluate(spec_of(rule), state, points, [0.0] * len(points), metas):
            if change.what != "raise":  # every point is a fault: nothing clears here
                continue
            t = points[change.index]
            late = fault.late or now_us - t > _LATE_US
            alarm, message = raise_alarm(
                db, rule, rule_dict(rule), None, at(t), None, late,
                run_id=fault.run_id, session_id=fault.capture_session_id,
            )  # fmt: skip
            rule.open_alarm_id = alarm.id
            messages.append(message)
        rule.last_ts_us, rule.holding_since_us = state.last_ts_us, state.holding_since_us
        rule.last_session_id = fault.capture_session_id
    return messages


def _fault_rules(db: Session, fault: models.SensorFault) -> list[models.AlarmRule]:
    """The run's ``fault`` rules, else the sensor's (a run's rule overrides the sensor's)."""
    other = aliased(AR)
    overridden = exists().where(
        other.sensor_id == AR.sensor_id, other.run_id == fault.run_id, other.kind == AR.kind,
        other.deleted_at.is_(None),
    )  # fmt: skip
    query = (
        select(AR)
        .where(
            AR.sensor_id == fault.sensor_id,
            AR.kind == "fault",
            AR.deleted_at.is_(None),
            or_(AR.run_id == fault.run_id, and_(AR.run_id.is_(None), ~overridden)),
        )
        .order_by(AR.id)
        .with_for_update()
    )
    return list(db.scalars(query))


def list_for_sensor(
    db: Session, project_id: uuid.UUID, sensor_id: uuid.UUID, limit: int
) -> list[models.SensorFault]:
    """The sensor's episodes, newest first."""
    return list(
        db.scalars(
            select(SF)
            .where(SF.sensor_id == sensor_id, SF.project_id == project_id)
            .order_by(SF.first_ts.desc(), SF.episode_id)
            .limit(limit)
        )
    )
