"""An alarm's transitions: raised (with the rule as it was), cleared, and the journal event
and live message of each (acknowledged: :func:`cloud.services.alarms.acknowledge`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.services import journal
from cloud.store.telemetry.base import StoredBatch

AL = models.Alarm


class RuleLike(Protocol):
    """A rule's definition: its row, or the evaluator's copy of it."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def project_id(self) -> uuid.UUID: ...
    @property
    def sensor_id(self) -> uuid.UUID: ...
    @property
    def run_id(self) -> uuid.UUID | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def low(self) -> float | None: ...
    @property
    def high(self) -> float | None: ...
    @property
    def window_s(self) -> float | None: ...
    @property
    def after_s(self) -> float | None: ...
    @property
    def for_s(self) -> float: ...
    @property
    def hysteresis(self) -> float: ...


def raise_alarm(
    db: Session,
    rule: RuleLike,
    snapshot: dict[str, Any],
    rows: StoredBatch | None,
    raised_at: datetime,
    value: float | None,
    late: bool,
    *,
    run_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
) -> tuple[models.Alarm, dict[str, Any]]:
    """Insert the alarm; the alarm as an object outside the session (its fields, for the
    journal and the live message). A Core statement: nothing reads the alarm back in the
    ingest that raises it, and the ORM's flush of it was a third of a transition's cost
    while that ingest holds its sensor's rules locked (bench/README.md)."""
    fields = {
        "id": uuid.uuid4(),
        "project_id": rule.project_id,
        "rule_id": rule.id,
        "sensor_id": rule.sensor_id,
        "run_id": rows.run_id if rows is not None else run_id,
        "capture_session_id": rows.capture_session_id if rows is not None else session_id,
        "kind": rule.kind,
        "rule": snapshot,
        "state": "raised",
        "raised_at": raised_at,
        "value": value,
        "late": late,
        "created_at": datetime.now(UTC),
    }
    db.execute(_INSERT, fields)
    alarm = AL(**fields)
    journal_alarm(db, "alarm.raised", alarm, "system:alarms", value=value, late=late)
    return alarm, live_message("alarm.raised", alarm)


def clear(
    db: Session,
    alarm_id: uuid.UUID,
    cleared_at: datetime,
    value: float | None,
    *,
    actor: str = "system:alarms",
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """Clear the alarm if it is not cleared yet (one statement, which locks its row to the
    commit); its live message, none if it was cleared already or is gone."""
    row = db.execute(
        _CLEAR, {"alarm_id": alarm_id, "cleared_at": cleared_at, "cleared_value": value}
    ).first()
    if row is None:
        return []
    alarm = AL(**row._asdict())
    extra = {"reason": reason} if reason else {}
    journal_alarm(db, "alarm.cleared", alarm, actor, value=value, **extra)
    return [live_message("alarm.cleared", alarm)]


_ALARMS = cast(Table, AL.__table__)
_INSERT = insert(_ALARMS)
_CLEAR = (
    update(_ALARMS)
    .where(_ALARMS.c.id == bindparam("alarm_id"), _ALARMS.c.cleared_at.is_(None))
    .values(
        cleared_at=bindparam("cleared_at"), cleared_value=bindparam("cleared_value"),
        state="cleared",
    )
    .returning(*_ALARMS.c)
)  # fmt: skip
_EXPERIMENT_OF = select(models.Run.experiment_id).where(models.Run.id == bindparam("run_id"))


def live_message(kind: str, alarm: models.Alarm) -> dict[str, Any]:
    """An alarm transition as the live stream sends it."""
    return {
        "type": kind,
        "alarm_id": str(alarm.id),
        "project_id": str(alarm.project_id),
        "rule_id": str(alarm.rule_id),
        "sensor_id": str(alarm.sensor_id),
        "run_id": str(alarm.run_id) if alarm.run_id else None,
        "capture_session_id": str(alarm.capture_session_id) if alarm.capture_session_id else None,
        "kind": alarm.kind,
        "state": alarm.state,
        "raised_at": alarm.raised_at.astimezone(UTC).isoformat(),
        "value": alarm.value,
        "late": alarm.late,
        "cleared_at": alarm.cleared_at.astimezone(UTC).isoformat() if alarm.cleared_at else None,
        "acknowledged_by": alarm.acknowledged_by,
    }


def journal_alarm(db: Session, kind: str, alarm: models.Alarm, actor: str, **payload: Any) -> None:
    experiment_id = (
        db.execute(_EXPERIMENT_OF, {"run_id": alarm.run_id}).scalar()
        if alarm.run_id is not None
        else None
    )
    journal.record(
        db,
        kind,
        project_id=alarm.project_id,
        actor=actor,
        experiment_id=experiment_id,
        run_id=alarm.run_id,
        capture_session_id=alarm.capture_session_id,
        sensor_id=alarm.sensor_id,
        alarm_id=alarm.id,
        alarm_rule_id=alarm.rule_id,
        alarm_kind=alarm.kind,
        raised_at=alarm.raised_at,
        cleared_at=alarm.cleared_at,
        **payload,
    )
