"""Telemetry ingest (the hot path) and queries.

Ingest validates and converts a whole batch in Python, then writes it with one statement:
COPY on PostgreSQL, one executemany on SQLite — never one ORM object per reading.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast, overload

import msgspec
from sqlalchemy import Table, and_, false, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models
from cloud.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from cloud.services import journal, telemetry_rollup
from cloud.services.sensors import hash_token, token_refused
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
    #: The timestamps in microseconds since the Unix epoch, if the caller has them already.
    stamps_us: list[int] | None = None

    def micros(self) -> list[int]:
        """The timestamps in microseconds since the Unix epoch."""
        if self.stamps_us is not None:
            return self.stamps_us
        return [utctime.micros(t) for t in self.timestamps]

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


#: Converters by (sensor, profile version, units): versions are immutable, so a key names
#: one converter for good, its unit conversions worked out once. Bounded by clearing;
#: rebuilding one is cheap.
_CONVERTERS: dict[tuple[uuid.UUID, str, str, str], Converter] = {}


def _converter(ctx: _Context) -> Converter:
    key = (ctx.sensor_id, ctx.profile_version, ctx.input_unit, ctx.display_unit)
    converter = _CONVERTERS.get(key)
    if converter is None:
        if len(_CONVERTERS) >= 4096:
            _CONVERTERS.clear()
        assert ctx.profile_kind is not None and ctx.profile_payload is not None
        # Lenient: units were checked when the version was stored; a version from before
        # units were checked (migration 0005 reports those) converts as it always did.
        converter = build_converter(
            ctx.profile_kind, ctx.profile_payload, ctx.display_unit, ctx.input_unit, lenient=True
        )
        _CONVERTERS[key] = converter
    return converter


def authenticate(db: Session, token: str | None, sensor_id: uuid.UUID) -> models.Sensor:
    if not token:
        raise token_refused(token)
    sensor = db.scalars(
        select(models.Sensor).where(models.Sensor.token_hash == hash_token(token))
    ).first()
    if sensor is None:
        raise token_refused(token)
    if sensor.id != sensor_id:
        raise Forbidden("this token belongs to another sensor than sensor_id")
    return sensor


S, R, C, P, B = (
    models.Sensor,
    models.Run,
    models.CaptureSession,
    models.SensorProfile,
    models.TelemetryBatch,
)

#: What ingest needs to know, as plain columns: loading four ORM entities per request was
#: a sixth of a small batch's cost. ``prev_*`` is the batch already stored under the
#: request's Idempotency-Key, if any.
_CONTEXT_COLUMNS = (
    S.id.label("sensor_id"),
    S.project_id,
    P.input_unit,
    P.display_unit,
    S.profile_version,
    R.id.label("run_id"),
    R.project_id.label("run_project_id"),
    R.experiment_id,
    C.id.label("session_id"),
    C.run_id.label("session_run_id"),
    C.status,
    C.started_at,
    C.stopped_at,
    P.kind.label("profile_kind"),
    P.payload.label("profile_payload"),
    B.id.label("prev_id"),
    B.fingerprint.label("prev_fingerprint"),
    B.count.label("prev_count"),
    B.late.label("prev_late"),
    B.profile_version.label("prev_profile_version"),
    B.first_ts.label("prev_first_ts"),
    B.last_ts.label("prev_last_ts"),
)


class _Context(NamedTuple):
    sensor_id: uuid.UUID
    project_id: uuid.UUID
    input_unit: str
    display_unit: str
    profile_version: str
    run_id: uuid.UUID | None
    run_project_id: uuid.UUID | None
    experiment_id: uuid.UUID | None
    session_id: uuid.UUID | None
    session_run_id: uuid.UUID | None
    status: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    profile_kind: str | None
    profile_payload: dict[str, Any] | None
    prev_id: int | None
    prev_fingerprint: str | None
    prev_count: int | None
    prev_late: int | None
    prev_profile_version: str | None
    prev_first_ts: datetime | None
    prev_last_ts: datetime | None


def _lookup(db: Session, token: str | None, batch: IncomingBatch, key: str | None) -> _Context:
    """The sensor of ``token`` with the batch's run, session, the sensor's current profile
    and the batch stored under ``key``, in one round trip. The checks on them are the
    caller's, in the same order as ever."""
    if not token:
        authenticate(db, token, batch.sensor_id)  # raises the 401
    # No key: join nothing (``idempotency_key = NULL`` would be no match anyway, but say so).
    same_key = and_(B.sensor_id == S.id, B.idempotency_key == key) if key else false()
    row = db.execute(
        select(*_CONTEXT_COLUMNS)
        .select_from(S)
        .outerjoin(R, R.id == batch.run_id)
        .outerjoin(C, C.id == batch.capture_session_id)
        .outerjoin(P, and_(P.sensor_id == S.id, P.version == S.profile_version))
        .outerjoin(B, same_key)
        .where(S.token_hash == hash_token(token or ""))
        .limit(1)
    ).first()
    if row is None or row.sensor_id != batch.sensor_id:
        authenticate(db, token, batch.sensor_id)  # raises the 401 or 403 it always did
    assert row is not None
    return _Context(*row)


def _window(ctx: _Context, batch: IncomingBatch, now: datetime, tolerance: timedelta) -> bool:
    """Whether the batch's readings are late (all or none: it depends on the session only);
    raises if a reading cannot be taken at all."""
    if ctx.status == "draft":
        raise Conflict(
            f"capture session {ctx.session_id} has not started (draft); start it before sending"
        )
    stamps = batch.timestamps
    errors: list[FieldError] = []
    if ctx.status == "running":
        limit = now + tolerance
        if max(stamps) > limit:  # one pass in C; the loop only names the bad ones
            errors = [
                FieldError(f"readings.{i}.timestamp", "is in the future")
                for i, ts in enumerate(stamps)
                if ts > limit
            ]
        late = False
    else:
        start, stop = ctx.started_at, ctx.stopped_at
        assert start is not None and stop is not None
        if min(stamps) < start or max(stamps) > stop:
            reason = (
                f"capture session ended ({ctx.status}); only readings inside its "
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
    ctx = _lookup(db, token, batch, idempotency_key)
    if ctx.run_id is None or ctx.run_project_id != ctx.project_id:
        raise NotFound(f"run {batch.run_id} not found")
    if ctx.session_id is None or ctx.session_run_id != ctx.run_id:
        raise NotFound(f"capture session {batch.capture_session_id} not found in run {ctx.run_id}")
    run_id, session_id = ctx.run_id, ctx.session_id

    if ctx.prev_id is not None:  # stored before under this key: the same batch, or a 422
        _same_batch(ctx.prev_fingerprint, batch)
        stored = models.TelemetryBatch(  # transient: the stored batch's answer again
            count=ctx.prev_count,
            late=ctx.prev_late,
            sensor_id=ctx.sensor_id,
            run_id=run_id,
            capture_session_id=session_id,
            profile_version=ctx.prev_profile_version,
            first_ts=ctx.prev_first_ts,
            last_ts=ctx.prev_last_ts,
        )
        return _accepted(stored), None

    now = datetime.now(UTC)
    late = _window(ctx, batch, now, future_tolerance)
    if ctx.profile_kind is None:  # cannot happen (a sensor always has its profile)
        raise LookupError(f"sensor {ctx.sensor_id} has no profile {ctx.profile_version}")
    values = _convert(_converter(ctx), ctx, batch)

    stamps = batch.timestamps
    stamps_us = [utctime.micros(t) for t in stamps]
    level, cells = telemetry_rollup.summarise(stamps_us, values)
    fields: dict[str, Any] = {
        "sensor_id": ctx.sensor_id,
        "run_id": run_id,
        "capture_session_id": session_id,
        "idempotency_key": idempotency_key,
        "fingerprint": batch.fingerprint(),
        "count": len(stamps),
        "late": len(stamps) if late else 0,
        "profile_version": ctx.profile_version,
        "first_ts": min(stamps),
        "last_ts": max(stamps),
        "received_at": now,
        "rollup_level": level,
    }
    new_id = _insert_batch(db, fields)
    if new_id is None:
        # Another request with this key committed between our lookup and our insert (a
        # retry racing the original): it stored the readings; answer as a replay.
        previous = _previous(db, ctx.sensor_id, idempotency_key or "", batch)
        assert previous is not None
        return _accepted(previous), None
    record = models.TelemetryBatch(id=new_id, **fields)
    fixed = (ctx.project_id, ctx.sensor_id, run_id, session_id, new_id, ctx.profile_version, late)
    rows = StoredRows(
        fixed=fixed,
        timestamps=stamps,
        raw_values=batch.raw_values,
        values=values,
        metas=batch.metas,
        stamps_us=stamps_us,
    )
    write_readings(db, rows)
    journal.record(
        db,
        "telemetry.ingested",
        project_id=ctx.project_id,
        actor=f"sensor:{ctx.sensor_id}",
        experiment_id=ctx.experiment_id,
        run_id=run_id,
        capture_session_id=session_id,
        sensor_id=ctx.sensor_id,
        count=record.count,
        late=record.late,
        first_timestamp=record.first_ts,
        last_timestamp=record.last_ts,
        profile_version=ctx.profile_version,
    )
    # Last: concurrent ingests of this sensor and session share the coarse cells' rows, and
    # each holds them locked from here to its commit.
    telemetry_rollup.write(db, telemetry_rollup.RollupKey(ctx.sensor_id, session_id, run_id), cells)
    published = IngestedBatch(
        batch_id=new_id,
        project_id=ctx.project_id,
        sensor_id=ctx.sensor_id,
        run_id=run_id,
        capture_session_id=session_id,
        display_unit=ctx.display_unit,
        profile_version=ctx.profile_version,
        first_ts=record.first_ts,
        last_ts=record.last_ts,
        rows=rows,
    )
    return _accepted(record), published


def _convert(converter: Converter, ctx: _Context, batch: IncomingBatch) -> list[float]:
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
        f"{len(errors)} readings cannot be converted by profile {ctx.profile_version} "
        f"({ctx.profile_kind}): {errors[0].reason}",
        errors=errors,  # every bad reading: a sender can set those aside and resend the rest
    )


def _previous(
    db: Session, sensor_id: uuid.UUID, key: str, batch: IncomingBatch
) -> models.TelemetryBatch | None:
    """The batch already stored under ``key``; 422 if that key carried another batch."""
    previous = db.scalars(
        select(models.TelemetryBatch).where(
            models.TelemetryBatch.sensor_id == sensor_id,
            models.TelemetryBatch.idempotency_key == key,
        )
    ).first()
    if previous is not None:
        _same_batch(previous.fingerprint, batch)
    return previous


def _same_batch(stored: str | None, batch: IncomingBatch) -> None:
    """A key names one batch: 422 when it comes back with another one."""
    if not batch.matches(stored):
        raise InvalidInput(
            "this Idempotency-Key already carried another batch of this sensor",
            errors=[FieldError("header.Idempotency-Key", "already used for another batch")],
        )


def _insert_batch(db: Session, fields: dict[str, Any]) -> int | None:
    """INSERT .. ON CONFLICT DO NOTHING RETURNING id: None when the key is already taken.

    A Core statement, not the ORM unit of work: the flush of one object was a sixth of a
    small request's time, and ON CONFLICT settles a race without a savepoint."""
    pg = db.get_bind().dialect.name == "postgresql"
    # The values as parameters of one statement built once: .values(**fields) made a new
    # statement, and a new cache key to compute, for every request.
    stmt = _INSERT_BATCH_PG if pg else _INSERT_BATCH_SQLITE
    return cast(int | None, db.execute(stmt, fields).scalar_one_or_none())


_BATCHES = cast(Table, models.TelemetryBatch.__table__)
_INSERT_BATCH_PG = (
    pg_insert(_BATCHES)
    .on_conflict_do_nothing(index_elements=["sensor_id", "idempotency_key"])
    .returning(_BATCHES.c.id)
)
_INSERT_BATCH_SQLITE = (
    sqlite_insert(_BATCHES)
    .on_conflict_do_nothing(index_elements=["sensor_id", "idempotency_key"])
    .returning(_BATCHES.c.id)
)


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


#: PostgreSQL's binary COPY framing (see "Binary Format" in the COPY documentation).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # then flags and extension length, 0
_COPY_TRAILER = b"\xff\xff"
_COPY_NULL = b"\xff\xff\xff\xff"
#: timestamptz is microseconds since 2000-01-01 UTC; this many after the Unix epoch.
_PG_EPOCH_US = utctime.micros(datetime(2000, 1, 1, tzinfo=UTC))
#: The three columns that vary per reading, each with its length: ts, raw_value, value.
_VARYING = struct.Struct(">iqidid")
_JSON = msgspec.json.Encoder()


def copy_data(rows: StoredRows) -> bytes:
    """The batch as a binary COPY stream of :data:`COLUMNS` (types :data:`COPY_TYPES`).

    Built here rather than row by row through psycopg's ``write_row``: seven of the eleven
    columns are the same for the whole batch and are encoded once, so a reading costs one
    ``struct.pack`` (1.1 -> 0.7 ms of CPU per 1000 readings, COPY included)."""
    project_id, sensor_id, run_id, session_id, batch_id, version, late = rows.fixed
    uuids = (project_id, sensor_id, run_id, session_id)
    head = (
        struct.pack(">h", len(COLUMNS))
        + b"".join(struct.pack(">i", 16) + u.bytes for u in uuids)
        + struct.pack(">iq", 8, batch_id)
    )
    text = version.encode()
    tail = struct.pack(">i", len(text)) + text + struct.pack(">i?", 1, late)
    tail_null = tail + _COPY_NULL
    pack = _VARYING.pack
    parts = [_COPY_SIGNATURE]
    append = parts.append
    for us, raw, value, meta in zip(
        rows.micros(), rows.raw_values, rows.values, rows.metas, strict=True
    ):
        row = head + pack(8, us - _PG_EPOCH_US, 8, raw, 8, value)
        if meta is None:
            append(row + tail_null)
        else:
            doc = _JSON.encode(meta)  # jsonb's binary form: version 1, then the JSON text
            append(row + tail + struct.pack(">ib", len(doc) + 1, 1) + doc)
    append(_COPY_TRAILER)
    return b"".join(parts)


def _copy_rows(pg: Any, rows: StoredRows) -> None:
    with (
        pg.cursor() as cur,
        cur.copy(
            f"COPY telemetry_readings ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.write(copy_data(rows))
