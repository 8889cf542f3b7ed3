"""Telemetry ingest (the hot path) and queries.

Ingest validates and converts a whole batch in Python, then writes it with one statement:
COPY on PostgreSQL, one executemany on SQLite — never one ORM object per reading.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound, Unauthenticated
from cloud.pagination import aware_datetime, decode, encode, int64
from cloud.schemas import ChartPoint, ReadingOut
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


# --- queries ------------------------------------------------------------------------------

T = models.TelemetryReading


@dataclass(frozen=True)
class ReadingFilter:
    project_id: uuid.UUID
    run_id: uuid.UUID | None = None
    sensor_id: uuid.UUID | None = None
    capture_session_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[Any]:
        if self.run_id is None and self.sensor_id is None and self.capture_session_id is None:
            raise InvalidInput(
                "give at least one of run_id, sensor_id, capture_session_id",
                errors=[FieldError("run_id", "one of run_id, sensor_id, capture_session_id")],
            )
        conds: list[Any] = [T.project_id == self.project_id]
        if self.run_id is not None:
            conds.append(T.run_id == self.run_id)
        if self.sensor_id is not None:
            conds.append(T.sensor_id == self.sensor_id)
        if self.capture_session_id is not None:
            conds.append(T.capture_session_id == self.capture_session_id)
        if self.since is not None:
            conds.append(T.ts >= self.since)
        if self.until is not None:
            conds.append(T.ts < self.until)
        return conds


def _reading_out(r: Any) -> ReadingOut:
    return ReadingOut(
        id=r.id,
        sensor_id=r.sensor_id,
        run_id=r.run_id,
        capture_session_id=r.capture_session_id,
        timestamp=r.ts,
        raw_value=r.raw_value,
        value=r.value,
        profile_version=r.profile_version,
        late=r.late,
        meta=r.meta,
    )


def query(
    db: Session, f: ReadingFilter, limit: int, cursor: str | None
) -> tuple[list[ReadingOut], str | None]:
    q = select(T).where(*f.where())
    key = decode(cursor, aware_datetime, int64)
    if key is not None:
        ts, last = key
        q = q.where(or_(T.ts > ts, and_(T.ts == ts, T.id > last)))
    rows = list(db.scalars(q.order_by(T.ts, T.id).limit(limit + 1)))
    nxt = encode(rows[limit - 1].ts.isoformat(), rows[limit - 1].id) if len(rows) > limit else None
    return [_reading_out(r) for r in rows[:limit]], nxt


def iter_all(db: Session, f: ReadingFilter, chunk: int = 5000) -> Iterator[ReadingOut]:
    cursor: str | None = None
    while True:
        page, cursor = query(db, f, chunk, cursor)
        yield from page
        if cursor is None:
            return


def _epoch(db: Session, column: Any) -> Any:
    if db.get_bind().dialect.name == "postgresql":
        # date_part() is float8; EXTRACT() is numeric since PostgreSQL 14 and makes bucketing
        # a million readings several times slower.
        return func.date_part("epoch", column)
    # SQLite keeps naive UTC text: julianday() reads it, 2440587.5 is the Unix epoch.
    return (func.julianday(column) - 2440587.5) * 86400.0


def series(db: Session, f: ReadingFilter, max_points: int) -> tuple[list[ChartPoint], int, bool]:
    """Readings for a chart: all of them if few, else min/max/mean per time bucket so that
    peaks survive the downsampling."""
    conds = f.where()
    # Counting a million readings costs as much as bucketing them, so count only up to
    # max_points + 1 (enough to choose the branch); a downsampled total is the sum of the
    # buckets' counts. min(ts) and max(ts) alone are two short index scans.
    few = db.execute(
        select(func.count()).select_from(
            select(T.id).where(*conds).limit(max_points + 1).subquery()
        )
    ).scalar_one()
    if few == 0:
        return [], 0, False
    if few <= max_points:
        rows = db.execute(select(T.ts, T.value).where(*conds).order_by(T.ts, T.id)).all()
        return (
            [ChartPoint(timestamp=t, value=v, min=v, max=v, count=1) for t, v in rows],
            len(rows),
            False,
        )
    tmin, tmax = db.execute(select(func.min(T.ts), func.max(T.ts)).where(*conds)).one()
    if tmin.tzinfo is None:
        tmin, tmax = tmin.replace(tzinfo=UTC), tmax.replace(tzinfo=UTC)
    buckets = max(1, max_points)
    span = max((tmax - tmin).total_seconds(), 1e-6)
    width = span / buckets
    start = tmin.timestamp()
    bucket = func.floor((_epoch(db, T.ts) - start) / width)
    if db.get_bind().dialect.name == "postgresql":
        # The planner cannot know that a bucket expression has only max_points values, so
        # it expects a million groups and sorts them all on disk; a hash of the few buckets
        # is several times faster. JIT compiling costs more than it saves here. Both
        # settings end with this request's transaction.
        db.execute(text("SET LOCAL enable_sort = off"))
        db.execute(text("SET LOCAL jit = off"))
    grouped = db.execute(
        select(
            bucket.label("b"), func.avg(T.value), func.min(T.value), func.max(T.value), func.count()
        )
        .where(*conds)
        .group_by("b")
    ).all()
    per_bucket = sorted((tuple(row) for row in grouped), key=lambda row: float(row[0]))
    total = sum(int(row[4]) for row in per_bucket)
    points = []
    for row in per_bucket:
        b, mean, lo, hi, n = cast(tuple[float, float, float, float, int], tuple(row))
        # Float rounding of the epoch can put the first reading at -1 or the last at
        # `buckets`: clamp, and _merge_edge folds the neighbours that then share a time.
        b = max(0, min(int(b), buckets - 1))
        mid = start + (b + 0.5) * width
        points.append(
            ChartPoint(
                timestamp=datetime.fromtimestamp(mid, UTC),
                value=float(mean),
                min=float(lo),
                max=float(hi),
                count=int(n),
            )
        )
    return _merge_edge(points), total, True


def _merge_edge(points: list[ChartPoint]) -> list[ChartPoint]:
    # The newest reading lands in bucket == buckets (floor of span/width), float rounding can
    # put the oldest in -1; clamping moves them to the edge buckets, which may then appear
    # twice: merge neighbours with the same time.
    merged: list[ChartPoint] = []
    for p in points:
        if merged and merged[-1].timestamp == p.timestamp:
            q = merged[-1]
            n = q.count + p.count
            merged[-1] = ChartPoint(
                timestamp=q.timestamp,
                value=(q.value * q.count + p.value * p.count) / n,
                min=min(q.min, p.min),
                max=max(q.max, p.max),
                count=n,
            )
        else:
            merged.append(p)
    return merged
