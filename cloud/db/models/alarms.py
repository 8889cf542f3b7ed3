"""Alarm rules on sensors, with their evaluator's state, the alarms they raise, and the
device faults that `fault` rules read."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db.models.base import Base, utcnow
from cloud.db.types import JSONType, UTCDateTime


class AlarmRule(Base):
    """A condition on one sensor's converted values (for one run, with ``run_id``), and its
    evaluator's state, updated in the ingest transaction under a row lock
    (:mod:`cloud.services.alarms`). Deleting one stamps ``deleted_at``: its alarms keep it."""

    __tablename__ = "alarm_rules"
    __table_args__ = (Index("ix_alarm_rules_sensor", "sensor_id", "deleted_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    sensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sensors.id"))
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    threshold: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    window_s: Mapped[float | None] = mapped_column(Float)
    after_s: Mapped[float | None] = mapped_column(Float)
    for_s: Mapped[float] = mapped_column(Float, default=0.0)
    hysteresis: Mapped[float] = mapped_column(Float, default=0.0)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the rule was last changed (set by a PATCH): not on every write of the row, which
    #: the evaluator's state below changes with nearly every batch of the sensor's readings.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Evaluator state. The newest reading evaluated (us since the epoch) and its session;
    #: since when the condition has held without a break (None: it does not hold); the
    #: alarm raised and not yet cleared.
    last_ts_us: Mapped[int | None] = mapped_column(BigInteger)
    last_session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    holding_since_us: Mapped[int | None] = mapped_column(BigInteger)
    open_alarm_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class Alarm(Base):
    """A rule's condition held from ``raised_at`` (the triggering reading's time) to
    ``cleared_at``; ``state`` is raised, acknowledged or cleared (an alarm cleared before
    anyone acknowledged it can still be acknowledged: ``acknowledged_at`` says so)."""

    __tablename__ = "alarms"
    __table_args__ = (
        Index("ix_alarms_project_state", "project_id", "state", "raised_at", "id"),
        Index("ix_alarms_run", "run_id", "raised_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alarm_rules.id"))
    sensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sensors.id"))
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id"))
    capture_session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(16))
    #: The rule as it was when the alarm was raised.
    rule: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="raised")
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float | None] = mapped_column(Float)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_value: Mapped[float | None] = mapped_column(Float)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    ack_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SensorFault(Base):
    """An episode of a sensor's device faults (an open or shorted probe: no value), as its
    sender last sent it (migration 0018): keyed by the sender's episode id, it only grows
    (``last_ts``, ``count``), so a repeat stores nothing. No foreign key, like the sequence
    ranges: a run's purge deletes its episodes with its readings."""

    __tablename__ = "sensor_faults"
    __table_args__ = (Index("ix_sensor_faults_sensor", "sensor_id", "first_ts"),)

    sensor_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    episode_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    capture_session_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(200))
    first_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    last_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(BigInteger)
    #: reached the cloud after its capture session ended
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
