"""Tables. The schema is the same on PostgreSQL and SQLite (Alembic creates it on both).

Telemetry, metrics and events are append-heavy: they get integer keys (cheap, ordered, good
for keyset pagination) and are written in bulk by Core statements or COPY, not ORM objects.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cloud.db.types import JSONType, UTCDateTime

# SQLite only autoincrements INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    owner_user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TokenColumns:
    """The token of a thing that calls the API on its own (:mod:`cloud.services.tokens`)."""

    #: SHA-256 of the current token; NULL once revoked. Tokens carry 256 random bits, so a
    #: fast hash is enough: there is nothing to brute-force, and ingest must stay cheap.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_preview: Mapped[str | None] = mapped_column(String(32))
    token_status: Mapped[str] = mapped_column(String(16), default="active")
    token_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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


class TelemetryBatch(Base):
    """One accepted ingest request. ``idempotency_key`` is unique per sensor and written in the
    same transaction as the readings, so a batch re-sent after a lost response is recognised
    even if the idempotency record of the first attempt was never completed."""

    __tablename__ = "telemetry_batches"
    __table_args__ = (
        UniqueConstraint("sensor_id", "idempotency_key"),
        # The batches a chart may have to read reading by reading (migration 0004): those
        # not summarised at the finest level. Batches of fast sensors, the bulk of the
        # readings, are not in it.
        Index(
            "ix_telemetry_batches_unrolled",
            "sensor_id",
            "capture_session_id",
            "last_ts",
            "first_ts",
            "rollup_level",
            postgresql_where=text("rollup_level > 0"),
            sqlite_where=text("rollup_level > 0"),
        ),
        # The parts of a request split between profile versions (migration 0012): few rows.
        Index(
            "ix_telemetry_batches_request",
            "request_batch_id",
            postgresql_where=text("request_batch_id IS NOT NULL"),
            sqlite_where=text("request_batch_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sensors.id"))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    capture_session_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    #: SHA-256 of the batch as validated: the same key with another batch is refused.
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    late: Mapped[int] = mapped_column(Integer)
    profile_version: Mapped[str] = mapped_column(String(64))
    first_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    last_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The finest level of :class:`TelemetryRollup` that includes this batch's readings
    #: (coarser ones do too); ``telemetry_rollup.NOT_ROLLED`` (7): none.
    rollup_level: Mapped[int] = mapped_column(SmallInteger, server_default="7")
    #: A request whose readings fall under several profile versions is stored as one batch
    #: per version (migration 0012); each of them, the one holding the Idempotency-Key too,
    #: names that one's id here, so a retry is answered for the whole request. NULL: the
    #: request is this batch alone (the common case).
    request_batch_id: Mapped[int | None] = mapped_column(BigInteger)


class TelemetryRollup(Base):
    """Count, sum, min and max of one sensor's readings in one capture session within one
    cell of time at one level of :mod:`cloud.services.telemetry_rollup` (migration 0004).
    Kept by ingest; charts read these instead of millions of readings."""

    __tablename__ = "telemetry_rollups"

    sensor_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    cell: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    capture_session_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
    lo: Mapped[float] = mapped_column(Float)
    hi: Mapped[float] = mapped_column(Float)


class TelemetryBatchCommit(Base):
    """The order in which telemetry batches committed (migration 0003), for the live stream.

    A batch's id comes from a sequence when it is inserted, but concurrent ingest
    transactions commit in any order: a client resuming "after batch N" must get the batches
    that committed after N, which batch ids cannot tell. ``position`` is taken in the ingest
    transaction under a lock held until its commit (:mod:`cloud.live.positions`), so
    positions grow in commit order and a snapshot that sees one position sees every lower
    one. No foreign key: one index probe less per ingest, and the row says nothing without
    its batch anyway (resume joins them)."""

    __tablename__ = "telemetry_batch_commits"

    position: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, unique=True)


class TelemetrySeqRange(Base):
    """The edge sequence numbers a stored batch holds (migration 0012), one row per range:
    written in the batch's transaction, so a batch and its ranges are stored together or not
    at all, and an idempotent retry (which stores nothing) adds none. The completeness
    answer (:mod:`cloud.services.completeness`) counts them per sensor, epoch and capture
    session against what the edge reports. No foreign key, like the batch commits: one index
    probe less per ingest."""

    __tablename__ = "telemetry_seq_ranges"
    __table_args__ = (
        Index("ix_seq_ranges_session", "capture_session_id", "sensor_id", "epoch", "seq_first"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, index=True)
    sensor_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    capture_session_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    #: the edge buffer's id: a sensor's numbers start from 1 again in each epoch
    epoch: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq_first: Mapped[int] = mapped_column(BigInteger)
    seq_last: Mapped[int] = mapped_column(BigInteger)
    #: numbers of readings the batch carried that were copies of readings already stored
    #: (same sensor, timestamp and value): arrived, but their rows are another batch's
    duplicate: Mapped[bool] = mapped_column(Boolean, default=False)


class TelemetryReading(Base):
    __tablename__ = "telemetry_readings"
    __table_args__ = (
        # Covers a chart's per-bucket scans (migration 0002): index-only on PostgreSQL.
        Index(
            "ix_telemetry_session_sensor_ts",
            "capture_session_id",
            "sensor_id",
            "ts",
            "id",
            postgresql_include=["project_id", "value"],
        ),
        Index("ix_telemetry_run_ts", "run_id", "ts", "id"),
        # One reading per sensor and timestamp (migration 0006): ingest drops a second copy
        # and refuses another value, across batches, workers and concurrent senders. ``id``
        # carried along keeps the (ts, id) keyset scans of a sensor index-only.
        Index(
            "ux_telemetry_sensor_ts",
            "sensor_id",
            "ts",
            unique=True,
            postgresql_include=["id"],
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    sensor_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    capture_session_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    raw_value: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)
    profile_version: Mapped[str] = mapped_column(String(64))
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: the edge's sequence number of the reading (migration 0012), its epoch being its
    #: batch's (telemetry_seq_ranges); None for a reading sent without one
    seq: Mapped[int | None] = mapped_column(BigInteger)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_name_step", "run_id", "name", "step", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id"))
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(String(200))
    step: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Optional, canonical spelling (migration 0005).
    unit: Mapped[str | None] = mapped_column(String(32))


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
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
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


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_project", "project_id", "id"),
        Index("ix_events_experiment", "experiment_id", "id"),
        Index("ix_events_run", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    experiment_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    capture_session_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    sensor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    actor: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    """``Idempotency-Key`` state, in the database so it holds across API processes."""

    __tablename__ = "idempotency_keys"

    principal: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # in_flight | done
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[list[list[str]] | None] = mapped_column(JSONType)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StreamTicketUse(Base):
    """A stream ticket that has opened a stream: it opens no other (shared by all processes)."""

    __tablename__ = "stream_ticket_uses"

    ticket_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


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


class Webhook(Base):
    """An owner's receiver of a project's events (migration 0016): the journal kinds it
    wants, POSTed to ``url`` signed with ``secret`` (:mod:`cloud.services.webhooks`). The
    secret is kept as it is, not hashed: every delivery is signed with it. After a rotation
    the previous one signs too, until ``previous_secret_until``."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_project", "project_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"))
    url: Mapped[str] = mapped_column(Text)
    kinds: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str] = mapped_column(String(64))
    secret_preview: Mapped[str] = mapped_column(String(32))
    previous_secret: Mapped[str | None] = mapped_column(String(64))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One event owed to one webhook: written in the transaction of the change it reports
    (a transactional outbox), sent until the receiver answers 2xx or the deliverer gives up.
    ``message_id`` is the event's: the same in every attempt, and for every webhook."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "message_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    message_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    #: pending | delivered | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Held by a deliverer until then (its attempt's timeout and a margin): no other process
    #: sends it meanwhile; a deliverer that died lets it go when this passes.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
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
