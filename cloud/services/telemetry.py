"""Telemetry ingest (the hot path) and queries.

Ingest validates and converts a whole batch in Python, then writes it with one statement:
COPY on PostgreSQL, one executemany on SQLite — never one ORM object per reading.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Table, and_, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound, Unauthenticated
from cloud.services import journal
from cloud.services.sensors import hash_token
from common.profiles import ConversionError, Converter, build_converter
from common.wire import TelemetryAccepted, TelemetryBatch


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
    rows: list[dict[str, Any]]


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
    db: Session, token: str | None, batch: TelemetryBatch
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
    session: models.CaptureSession, batch: TelemetryBatch, now: datetime, tolerance: timedelta
) -> list[bool]:
    """Whether each reading is late; raises if a reading cannot be taken at all."""
    if session.status == "draft":
        raise Conflict(
            f"capture session {session.id} has not started (draft); start it before sending"
        )
    errors: list[FieldError] = []
    late: list[bool] = []
    if session.status == "running":
        limit = now + tolerance
        for i, r in enumerate(batch.readings):
            if r.timestamp > limit:
                errors.append(FieldError(f"readings.{i}.timestamp", "is in the future"))
            late.append(False)
    else:
        start, stop = session.started_at, session.stopped_at
        assert start is not None and stop is not None
        for i, r in enumerate(batch.readings):
            if not start <= r.timestamp <= stop:
                errors.append(
                    FieldError(
                        f"readings.{i}.timestamp",
                        f"capture session ended ({session.status}); only readings inside its "
                        f"window {start.isoformat()}..{stop.isoformat()} are accepted",
                    )
                )
            late.append(True)
    if errors:
        raise InvalidInput(
            f"{len(errors)} of {len(batch.readings)} readings cannot be accepted: "
            f"{errors[0].field} {errors[0].reason}",
            errors=errors,  # every bad reading: a sender can set those aside and resend the rest
        )
    return late


def ingest(
    db: Session,
    token: str | None,
    batch: TelemetryBatch,
    idempotency_key: str | None,
    future_tolerance: timedelta,
) -> tuple[TelemetryAccepted, IngestedBatch | None]:
    """Store a batch; returns the answer and what to publish (None for a re-sent batch)."""
    sensor, run, session, profile = _lookup(db, token, batch)
    if run is None or run.project_id != sensor.project_id:
        raise NotFound(f"run {batch.run_id} not found")
    if session is None or session.run_id != run.id:
        raise NotFound(f"capture session {batch.capture_session_id} not found in run {run.id}")

    fingerprint = hashlib.sha256(batch.model_dump_json().encode()).hexdigest()
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
    converter = _converter(sensor, profile)
    values, errors = [], []
    for i, r in enumerate(batch.readings):
        try:
            values.append(converter.convert(r.raw_value, r.meta))
        except ConversionError as exc:
            errors.append(FieldError(f"readings.{i}.raw_value", str(exc)))
    if errors:
        raise InvalidInput(
            f"{len(errors)} readings cannot be converted by profile {profile.version} "
            f"({profile.kind}): {errors[0].reason}",
            errors=errors,  # every bad reading: a sender can set those aside and resend the rest
        )

    stamps = [r.timestamp.astimezone(UTC) for r in batch.readings]
    fields: dict[str, Any] = {
        "sensor_id": sensor.id,
        "run_id": run.id,
        "capture_session_id": session.id,
        "idempotency_key": idempotency_key,
        "fingerprint": fingerprint,
        "count": len(stamps),
        "late": sum(late),
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
    # Plain locals: ORM attribute access per reading costs more than building the row.
    project_id, sensor_id, run_id, session_id = sensor.project_id, sensor.id, run.id, session.id
    batch_id, version = record.id, profile.version
    rows = [
        {
            "project_id": project_id,
            "sensor_id": sensor_id,
            "run_id": run_id,
            "capture_session_id": session_id,
            "batch_id": batch_id,
            "ts": ts,
            "raw_value": r.raw_value,
            "value": value,
            "profile_version": version,
            "late": is_late,
            "meta": r.meta,
        }
        for r, ts, value, is_late in zip(batch.readings, stamps, values, late, strict=True)
    ]
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
        batch_id=batch_id,
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


def write_readings(db: Session, rows: Sequence[dict[str, Any]]) -> None:
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        _copy_rows(conn.connection.driver_connection, rows)
    else:
        db.execute(insert(models.TelemetryReading), list(rows))


def _copy_rows(pg: Any, rows: Sequence[dict[str, Any]]) -> None:
    from psycopg.types.json import Jsonb

    with (
        pg.cursor() as cur,
        cur.copy(
            f"COPY telemetry_readings ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(COPY_TYPES)
        as_tuple = itemgetter(*COLUMNS)
        for row in rows:
            values = as_tuple(row)
            if values[-1] is not None:
                values = (*values[:-1], Jsonb(values[-1]))
            copy.write_row(values)
