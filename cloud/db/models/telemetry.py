"""Telemetry and metrics: the readings, the batches they came in, the order batches
committed in, the edge sequence numbers they hold, the chart rollups, and run metrics.

Append-heavy: integer keys (cheap, ordered, good for keyset pagination), written in bulk by
Core statements or COPY, not ORM objects."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db.models.base import Base, BigId, utcnow
from cloud.db.types import JSONType, UTCDateTime


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
