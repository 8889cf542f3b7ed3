"""Telemetry ingest (the hot path) and queries.

Ingest validates and converts a whole batch in Python, then writes it with one statement:
COPY on PostgreSQL, one executemany on SQLite — never one ORM object per reading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast, overload

from sqlalchemy import Table, and_, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound, Unauthenticated
from cloud.services import journal
from cloud.services.sensors import hash_token
from cloud.services.telemetry_batch import IncomingBatch
from common.profiles import ConversionError, Converter, build_converter
from common.wire import TelemetryAccepted

COLUMNS = (
    "project_id",
    "sensor_id",
    "run_id",
    "capture_session_id",
    "batch_id",
    "ts",
    "raw_value",
    "value",
    "profile_version",
    "late",
    "meta",
)

#: PostgreSQL types of :data:`COLUMNS`, for binary COPY.
COPY_TYPES = [
    "uuid", "uuid", "uuid", "uuid", "int8", "timestamptz", "float8", "float8", "text", "bool",
    "jsonb",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredRows(Sequence[dict[str, Any]]):
    """The readings of a stored batch as rows of :data:`COLUMNS`, built only when asked.

    Ingest keeps the batch in columns; a live subscriber of this process is the only one
    that wants per-reading rows, so they are made on demand (``len`` is free)."""

    fixed: tuple[Any, ...]  # project_id .. batch_id, then profile_version, late
    timestamps: list[datetime]
    raw_values: list[float]
    values: list[float]
    metas: list[dict[str, Any] | None]

    def __len__(self) -> int:
        return len(self.timestamps)

    def _row(self, i: int) -> dict[str, Any]:
        project_id, sensor_id, run_id, session_id, batch_id, version, late = self.fixed
        return {
            "project_id": project_id,
            "sensor_id": sensor_id,
            "run_id": run_id,
            "capture_session_id": session_id,
            "batch_id": batch_id,
            "ts": self.timestamps[i],
            "raw_value": self.raw_values[i],
            "value": self.values[i],
            "profile_version": version,
            "late": late,
            "meta": self.metas[i],
        }

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._row(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self._row(i) for i in range(len(self)))


@dataclass(frozen=True)
class IngestedBatch:
    """What was stored, handed to live listeners (inside the transaction, then after it)."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    display_unit: str
    profile_version: str
    first_ts: datetime
    last_ts: datetime
    rows: Sequence[dict[str, Any]]


#: Converters by (sensor, profile version, display unit): versions are immutable, so a key
#: names one converter for good. Bounded by clearing; rebuilding one is cheap.
_CONVERTERS: dict[tuple[uuid.UUID, str, str], Converter] = {}


def _converter(sensor: models.Sensor, profile: models.SensorProfile) -> Converter:
    key = (sensor.id, profile.version, sensor.display_unit)
    converter = _CONVERTERS.get(key)
    if converter is None:
        if len(_CONVERTERS) >= 4096:
            _CONVERTERS.clear()
        converter = build_converter(profile.kind, profile.payload, sensor.display_unit)
        _CONVERTERS[key] = converter
    return converter


def authenticate(db: Session, token: str | None, sensor_id: uuid.UUID) -> models.Sensor:
    if not token:
        raise Unauthenticated(
            "telemetry needs the sensor's token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    sensor = db.scalars(
        select(models.Sensor).where(models.Sensor.token_hash == hash_token(token))
    ).first()
    if sensor is None:
        raise Unauthenticated(
            "unknown, rotated or revoked sensor token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if sensor.id != sensor_id:
        raise Forbidden("this token belongs to another sensor than sensor_id")
    return sensor


def _lookup(
    db: Session, token: str | None, batch: IncomingBatch
) -> tuple[
    models.Sensor,
    models.Run | None,
    models.CaptureSession | None,
    models.SensorProfile | None,
]:
    """The sensor of ``token`` with the batch's run, session and the sensor's current profile,
    in one round trip (four separate queries were a third of a small batch's cost). The
    checks on them are the caller's, in the same order as before."""
    if not token:
        return authenticate(db, token, batch.sensor_id), None, None, None  # raises 401
    S, R, C, P = models.Sensor, models.Run, models.CaptureSession, models.SensorProfile
    row = db.execute(
        select(S, R, C, P)
        .select_from(S)
        .outerjoin(R, R.id == batch.run_id)
        .outerjoin(C, C.id == batch.capture_session_id)
        .outerjoin(P, and_(P.sensor_id == S.id, P.version == S.profile_version))
        .where(S.token_hash == hash_token(token))
        .limit(1)
    ).first()
    if row is None or row[0].id != batch.sensor_id:
        authenticate(db, token, batch.sensor_id)  # raises the 401 or 403 it always did
    assert row is not None
    return row[0], row[1], row[2], row[3]


def _window(
    session: models.CaptureSession, batch: IncomingBatch, now: datetime, tolerance: timedelta
) -> bool:
    """Whether the batch's readings are late (all or none: it depends on the session only);
    raises if a reading cannot be taken at all."""
    if session.status == "draft":
        raise Conflict(
            f"capture session {session.id} has not started (draft); start it before sending"
        )
    stamps = batch.timestamps
    errors: list[FieldError] = []
    if session.status == "running":
        limit = now + tolerance
        if max(stamps) > limit:  # one pass in C; the loop only names the bad ones
            errors = [
                FieldError(f"readings.{i}.timestamp", "is in the future")
                for i, ts in enumerate(stamps)
                if ts > limit
            ]
        late = False
    else:
        start, stop = session.started_at, session.stopped_at
        assert start is not None and stop is not None
        if min(stamps) < start or max(stamps) > stop:
            reason = (
                f"capture session ended ({session.status}); only readings inside its "
                f"window {start.isoformat()}..{stop.isoformat()} are accepted"
            )
            errors = [
                FieldError(f"readings.{i}.timestamp", reason)
                for i, ts in enumerate(stamps)
                if not start <= ts <= stop
            ]
        late = True
    if errors:
        raise InvalidInput(
            f"{len(errors)} of {len(stamps)} readings cannot be accepted: "
            f"{errors[0].field} {errors[0].reason}",
            errors=errors,  # every bad reading: a sender can set those aside and resend the rest
        )
    return late


def ingest(
    db: Session,
    token: str | None,
    batch: IncomingBatch,
    idempotency_key: str | None,
    future_tolerance: timedelta,
) -> tuple[TelemetryAccepted, IngestedBatch | None]:
    """Store a batch; returns the answer and what to publish (None for a re-sent batch)."""
    sensor, run, session, profile = _lookup(db, token, batch)
    if run is None or run.project_id != sensor.project_id:
        raise NotFound(f"run {batch.run_id} not found")
    if session is None or session.run_id != run.id:
        raise NotFound(f"capture session {batch.capture_session_id} not found in run {run.id}")

    fingerprint = batch.fingerprint()
    if idempotency_key is not None:
        previous = _previous(db, sensor.id, idempotency_key, fingerprint)
        if previous is not None:
            return _accepted(previous), None

    now = datetime.now(UTC)
    late = _window(session, batch, now, future_tolerance)
    if profile is None:  # cannot happen (a sensor always has its profile): fail as before
        profile = db.scalars(
            select(models.SensorProfile).where(
                models.SensorProfile.sensor_id == sensor.id,
                models.SensorProfile.version == sensor.profile_version,
            )
        ).one()
    values = _convert(_converter(sensor, profile), profile, batch)

    stamps = batch.timestamps
    fields: dict[str, Any] = {
        "sensor_id": sensor.id,
        "run_id": run.id,
        "capture_session_id": session.id,
        "idempotency_key": idempotency_key,
        "fingerprint": fingerprint,
        "count": len(stamps),
        "late": len(stamps) if late else 0,
        "profile_version": profile.version,
        "first_ts": min(stamps),
        "last_ts": max(stamps),
        "received_at": now,
    }
    # A Core INSERT .. RETURNING, not the ORM unit of work: the flush of this one object was
    # a sixth of a small request's time. ``record`` stays a plain (transient) model.
    new_id = _insert_batch(db, fields)
    if new_id is None:
        # Another request with this key committed between our check and our insert (a
        # retry racing the original): it stored the readings; answer as a replay.
        previous = _previous(db, sensor.id, idempotency_key or "", fingerprint)
        assert previous is not None
        return _accepted(previous), None
    record = models.TelemetryBatch(id=new_id, **fields)
    rows = StoredRows(
        fixed=(sensor.project_id, sensor.id, run.id, session.id, new_id, profile.version, late),
        timestamps=stamps,
        raw_values=batch.raw_values,
        values=values,
        metas=batch.metas,
    )
    write_readings(db, rows)
    journal.record(
        db,
        "telemetry.ingested",
        project_id=sensor.project_id,
        actor=f"sensor:{sensor.id}",
        experiment_id=run.experiment_id,
        run_id=run.id,
        capture_session_id=session.id,
        sensor_id=sensor.id,
        count=record.count,
        late=record.late,
        first_timestamp=record.first_ts,
        last_timestamp=record.last_ts,
        profile_version=profile.version,
    )
    published = IngestedBatch(
        batch_id=new_id,
        project_id=sensor.project_id,
        sensor_id=sensor.id,
        run_id=run.id,
        capture_session_id=session.id,
        display_unit=sensor.display_unit,
        profile_version=profile.version,
        first_ts=record.first_ts,
        last_ts=record.last_ts,
        rows=rows,
    )
    return _accepted(record), published


def _convert(
    converter: Converter, profile: models.SensorProfile, batch: IncomingBatch
) -> list[float]:
    """Every reading in the sensor's display unit; a 422 names each one that cannot be."""
    convert = converter.convert
    try:  # the common case in one comprehension; the loop below only to name the failures
        return [convert(raw, meta) for raw, meta in zip(batch.raw_values, batch.metas, strict=True)]
    except ConversionError:
        pass
    errors = []
    for i, (raw, meta) in enumerate(zip(batch.raw_values, batch.metas, strict=True)):
        try:
            convert(raw, meta)
        except ConversionError as exc:
            errors.append(FieldError(f"readings.{i}.raw_value", str(exc)))
    raise InvalidInput(
        f"{len(errors)} readings cannot be converted by profile {profile.version} "
        f"({profile.kind}): {errors[0].reason}",
        errors=errors,  # every bad reading: a sender can set those aside and resend the rest
    )


def _previous(
    db: Session, sensor_id: uuid.UUID, key: str, fingerprint: str
) -> models.TelemetryBatch | None:
    """The batch already stored under ``key``; 422 if that key carried another batch."""
    previous = db.scalars(
        select(models.TelemetryBatch).where(
            models.TelemetryBatch.sensor_id == sensor_id,
            models.TelemetryBatch.idempotency_key == key,
        )
    ).first()
    if previous is not None and previous.fingerprint not in (None, fingerprint):
        raise InvalidInput(
            "this Idempotency-Key already carried another batch of this sensor",
            errors=[FieldError("header.Idempotency-Key", "already used for another batch")],
        )
    return previous


def _insert_batch(db: Session, fields: dict[str, Any]) -> int | None:
    """INSERT .. ON CONFLICT DO NOTHING RETURNING id: None when the key is already taken.

    A Core statement, not the ORM unit of work: the flush of one object was a sixth of a
    small request's time, and ON CONFLICT settles a race without a savepoint."""
    table = cast(Table, models.TelemetryBatch.__table__)
    on = ["sensor_id", "idempotency_key"]
    stmt: Any
    if db.get_bind().dialect.name == "postgresql":
        stmt = pg_insert(table).values(**fields).on_conflict_do_nothing(index_elements=on)
    else:
        stmt = sqlite_insert(table).values(**fields).on_conflict_do_nothing(index_elements=on)
    stmt = stmt.returning(table.c.id)
    return cast(int | None, db.execute(stmt).scalar_one_or_none())


def _accepted(record: models.TelemetryBatch) -> TelemetryAccepted:
    return TelemetryAccepted(
        accepted=record.count,
        late=record.late,
        sensor_id=record.sensor_id,
        run_id=record.run_id,
        capture_session_id=record.capture_session_id,
        profile_version=record.profile_version,
        first_timestamp=record.first_ts,
        last_timestamp=record.last_ts,
    )


def write_readings(db: Session, rows: StoredRows) -> None:
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        _copy_rows(conn.connection.driver_connection, rows)
    else:
        db.execute(insert(models.TelemetryReading), list(rows))


def _copy_rows(pg: Any, rows: StoredRows) -> None:
    from psycopg.types.json import Jsonb

    project_id, sensor_id, run_id, session_id, batch_id, version, late = rows.fixed
    with (
        pg.cursor() as cur,
        cur.copy(
            f"COPY telemetry_readings ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(COPY_TYPES)
        write = copy.write_row
        # Straight from the columns: no per-reading dict on the way to the wire.
        for ts, raw, value, meta in zip(
            rows.timestamps, rows.raw_values, rows.values, rows.metas, strict=True
        ):
            write(
                (
                    project_id,
                    sensor_id,
                    run_id,
                    session_id,
                    batch_id,
                    ts,
                    raw,
                    value,
                    version,
                    late,
                    None if meta is None else Jsonb(meta),
                )
            )
