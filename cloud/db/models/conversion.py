"""Conversions done again: calibration fits of a sensor, and reprocessing jobs with the
values they wrote under another profile version."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, SmallInteger, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db.models.base import Base, utcnow
from cloud.db.types import JSONType, UTCDateTime


class SensorCalibration(Base):
    """A calibration fit of a sensor (migration 0009): what it was fitted from, and its
    answer (coefficients, uncertainties, residuals per point, the proposed profile) as
    it was given, so a fit can be read back and audited after the profile moved on."""

    __tablename__ = "sensor_calibrations"
    __table_args__ = (Index("ix_sensor_calibrations_sensor", "sensor_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    sensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sensors.id"))
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    model: Mapped[str] = mapped_column(String(32))
    degree: Mapped[int] = mapped_column(SmallInteger)
    #: "points" (pairs given) or "reference_sensor" (readings paired by time).
    source: Mapped[str] = mapped_column(String(16))
    reference_sensor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The profile version whose values were fitted (the proposal builds on it).
    base_profile_version: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReprocessJob(Base):
    """A reprocessing of a sensor's stored readings under one profile version (migration
    0017), run in chunks by :mod:`cloud.services.reprocess_runner`. The scope is fixed when
    the job is accepted: the sensor's readings (of ``run_id``, in ``since``..``until``) with
    ids up to ``max_id``, stamped ``first_ts``..``last_ts``. ``cursor_ts`` is the timestamp
    of the last reading converted: each chunk converts the next readings after it and moves
    it in the same transaction as their values (a sensor has one reading per timestamp, so
    the timestamp alone says where a chunk ended)."""

    __tablename__ = "reprocess_jobs"
    __table_args__ = (
        Index("ix_reprocess_jobs_sensor", "sensor_id", "profile_version"),
        # What the runner picks up: the few jobs not ended.
        Index(
            "ix_reprocess_jobs_pending",
            "created_at",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    sensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sensors.id"))
    profile_version: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: queued | running | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    #: the scope, fixed when the job was accepted (None: no reading in it)
    max_id: Mapped[int | None] = mapped_column(BigInteger)
    first_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cursor_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: readings in the scope, counted when the job was accepted; readings gone through so
    #: far, and of those: values written, already under the version (nothing to write),
    #: and not convertible by it (they keep their first value)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    converted: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    unconvertible: Mapped[int] = mapped_column(BigInteger, default=0)
    #: the versions the readings gone through were first converted with
    from_versions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    cancelled_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReprocessedValue(Base):
    """A reading's value under a profile version other than the one that first converted it
    (migration 0017). The reading keeps its first value in ``telemetry_readings.value``;
    reads that ask for a version (by default the sensor's current one) take this one where
    it exists. One row per reading and version: the primary key is what a read joins on."""

    __tablename__ = "reprocessed_values"

    reading_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    profile_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    #: the job that wrote it (a later job under the same version writes it again)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
