"""Projects and what they hold: sensors and their profile versions, edges, experiments,
runs, capture sessions, and the notes on runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db.models.base import Base, BigId, TokenColumns, utcnow
from cloud.db.types import JSONType, UTCDateTime


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    owner_user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sensor(TokenColumns, Base):
    __tablename__ = "sensors"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    #: The current profile's units, in their canonical spelling (common.units).
    input_unit: Mapped[str] = mapped_column(String(32))
    display_unit: Mapped[str] = mapped_column(String(32))
    profile_version: Mapped[str] = mapped_column(String(64))
    #: how often it should read, in seconds (migration 0012): the health rule
    #: ``sensor_silent`` fires after 10 of them without a reading; None: no such rule
    expected_interval_s: Mapped[float | None] = mapped_column(Float)
    #: Alarm rules on this sensor that are not deleted (migration 0015): read by the ingest's
    #: one lookup, so a sensor without rules costs ingest nothing more.
    alarm_rules: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Edge(TokenColumns, Base):
    """A bench PC running the edge daemon (migration 0010). It reports in with its own token;
    the last heartbeat is kept whole (each one supersedes the one before: no history)."""

    __tablename__ = "edges"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    #: the last heartbeat as the edge sent it (common.heartbeat.Heartbeat), and when the
    #: cloud received it (by the cloud's clock: staleness never trusts the edge's)
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the health conditions in force (migration 0012, :mod:`cloud.health`), by key
    health: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class SensorProfile(Base):
    __tablename__ = "sensor_profiles"
    __table_args__ = (UniqueConstraint("sensor_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sensors.id"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: The units this version converts from and to (migration 0005): part of the version,
    #: so the values stored under it say which unit they are in.
    input_unit: Mapped[str] = mapped_column(String(32), server_default="")
    display_unit: Mapped[str] = mapped_column(String(32), server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: Readings stamped from this instant on convert with this version, until the next
    #: version's (migration 0012). A sensor's first version is effective from the Unix
    #: epoch: every reading has a version. Later ones only ever start after the one before.
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(16), default="active")
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set by an owner's delete (migration 0011): hidden, restorable until purged.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ExperimentTag(Base):
    """Tags again, one row each: a portable, indexable tag filter on both databases."""

    __tablename__ = "experiment_tags"

    experiment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    experiment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("experiments.id"), index=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set by an owner's delete of the run or of its experiment (migration 0011): the one
    #: mark every read checks, so a deleted experiment's runs need no join to hide.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    #: Deleted with its experiment (restored with it), not on its own.
    deleted_with_experiment: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CaptureSession(Base):
    __tablename__ = "capture_sessions"
    __table_args__ = (
        UniqueConstraint("run_id", "ordinal_number"),
        # At most one running session per run, enforced by the database itself.
        Index(
            "uq_capture_sessions_one_running",
            "run_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"), index=True)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    ordinal_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    notes: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Annotation(Base):
    """A note on a run over a time range (``end`` set) or at an instant, optionally about one
    sensor: "door opened", "probe re-seated". Kept with the record, listed by time."""

    __tablename__ = "annotations"
    __table_args__ = (Index("ix_annotations_run_start", "run_id", "start", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"))
    sensor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sensors.id"))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
