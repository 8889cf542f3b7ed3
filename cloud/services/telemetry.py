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
import psycopg
from sqlalchemy import Table, and_, false, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
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
    R.deleted_at.label("run_deleted_at"),
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
    run_deleted_at: datetime | None
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


def _window(
    ctx: _Context, batch: IncomingBatch, now: datetime, future: timedelta, skew: timedelta
) -> bool:
    """Whether the batch's readings are late (all or none: it depends on the session only);
    raises, naming each one, if a reading falls outside the session's time: from its start
    minus ``skew`` (the bench PC's clock may lag) to now plus ``future`` while it runs, to
    its stop once it ended (late data)."""
    if ctx.status == "draft":
        raise Conflict(
            f"capture session {ctx.session_id} has not started (draft); start it before sending"
        )
    stamps = batch.timestamps
    start = ctx.started_at
    assert start is not None
    earliest = start - skew
    if ctx.status == "running":
        latest, late = now + future, False
        after = "is in the future"
    else:
        assert ctx.stopped_at is not None
        latest, late = ctx.stopped_at, True
        after = (
            f"capture session ended ({ctx.status}); only readings inside its window "
            f"{earliest.isoformat()}..{latest.isoformat()} are accepted"
        )
    if min(stamps) >= earliest and max(stamps) <= latest:  # two passes in C: the common case
        return late
    before = (
        f"is before its capture session started ({start.isoformat()}); readings from "
        f"{earliest.isoformat()} on are accepted (clock skew tolerance {skew.total_seconds():g} s)"
    )
    errors = [
        FieldError(f"readings.{i}.timestamp", before if ts < earliest else after)
        for i, ts in enumerate(stamps)
        if not earliest <= ts <= latest
    ]
    raise InvalidInput(
        f"{len(errors)} of {len(stamps)} readings cannot be accepted: "
        f"{errors[0].field} {errors[0].reason}",
        errors=errors,  # every bad reading: a sender can set those aside and resend the rest
    )


class Ingested(NamedTuple):
    """What :func:`ingest` did with a batch."""

    answer: TelemetryAccepted
    #: What to publish to live listeners; None when nothing new was stored.
    published: IngestedBatch | None
    #: The batch was stored before under this Idempotency-Key: its answer again.
    replayed: bool


def ingest(
    db: Session,
    token: str | None,
    batch: IncomingBatch,
    idempotency_key: str | None,
    future_tolerance: timedelta,
    clock_skew: timedelta,
) -> Ingested:
    """Store a batch. A sensor has one reading per timestamp: a copy of a stored reading (same
    timestamp, same raw value) is dropped and counted as ``duplicate``; another value at a
    stored timestamp is refused (422 naming the reading)."""
    ctx = _lookup(db, token, batch, idempotency_key)
    # A deleted run takes no readings (its sessions are stopped before it can be deleted; a
    # late batch from an offline edge is refused like any for an unknown run).
    if ctx.run_id is None or ctx.run_project_id != ctx.project_id or ctx.run_deleted_at:
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
        return Ingested(_accepted(stored, len(batch)), None, True)

    now = datetime.now(UTC)
    late = _window(ctx, batch, now, future_tolerance, clock_skew)
    if ctx.profile_kind is None:  # cannot happen (a sensor always has its profile)
        raise LookupError(f"sensor {ctx.sensor_id} has no profile {ctx.profile_version}")
    values = _convert(_converter(ctx), ctx, batch)

    received = len(batch)
    stamps, raws, metas = batch.timestamps, batch.raw_values, batch.metas
    stamps_us = [utctime.micros(t) for t in stamps]
    #: index in the batch of each reading kept, when some were copies (None: all kept)
    origin: list[int] | None = None
    if len(set(stamps_us)) != received:  # rare; the check is one pass in C
        origin = _first_of_each_timestamp(raws, stamps_us)
        stamps = [stamps[i] for i in origin]
        raws = [raws[i] for i in origin]
        metas = [metas[i] for i in origin]
        values = [values[i] for i in origin]
        stamps_us = [stamps_us[i] for i in origin]
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
        return Ingested(_accepted(previous, received), None, True)
    fixed = (ctx.project_id, ctx.sensor_id, run_id, session_id, new_id, ctx.profile_version, late)
    rows = StoredRows(
        fixed=fixed,
        timestamps=stamps,
        raw_values=raws,
        values=values,
        metas=metas,
        stamps_us=stamps_us,
    )
    if not _write_new(db, rows):
        # Some of these timestamps were stored already (another batch, another edge): keep
        # only what is new, and let the batch, its summaries and the live stream say so.
        rows = _store_new(db, rows, origin)
        fields.update(
            count=len(rows),
            late=len(rows) if late else 0,
            first_ts=min(rows.timestamps, default=fields["first_ts"]),
            last_ts=max(rows.timestamps, default=fields["last_ts"]),
        )
        level, cells = telemetry_rollup.summarise(rows.micros(), rows.values) if rows else (0, [])
        fields["rollup_level"] = level
        db.execute(
            update(_BATCHES)
            .where(_BATCHES.c.id == new_id)
            .values(
                count=fields["count"],
                late=fields["late"],
                first_ts=fields["first_ts"],
                last_ts=fields["last_ts"],
                rollup_level=level,
            )
        )
    record = models.TelemetryBatch(id=new_id, **fields)
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
        duplicate=received - record.count,
        first_timestamp=record.first_ts,
        last_timestamp=record.last_ts,
        profile_version=ctx.profile_version,
    )
    if not rows:  # every reading was a copy: nothing to summarise or to publish
        return Ingested(_accepted(record, received), None, False)
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
    return Ingested(_accepted(record, received), published, False)


def _first_of_each_timestamp(raws: list[float], stamps_us: list[int]) -> list[int]:
    """The index of each reading that is the first of its timestamp: a later one with the
    same raw value is a copy, dropped; a 422 names each later one with another value."""
    first: dict[int, int] = {}
    keep: list[int] = []
    errors: list[FieldError] = []
    for i, us in enumerate(stamps_us):
        j = first.setdefault(us, i)
        if j == i:
            keep.append(i)
        elif raws[i] != raws[j]:
            errors.append(
                FieldError(
                    f"readings.{i}.timestamp",
                    f"readings.{j} of this batch has this timestamp with raw_value {raws[j]!r};"
                    f" {ONE_PER_TIMESTAMP}",
                )
            )
    if errors:
        raise _refused(errors, "another value at a timestamp of this batch")
    return keep


def _refused(errors: list[FieldError], what: str) -> InvalidInput:
    """Every refused reading at once: a sender can set those aside and resend the rest."""
    n = len(errors)
    return InvalidInput(
        f"{n} reading{'s' if n != 1 else ''} refused, {what}: {errors[0].field} {errors[0].reason}",
        errors=errors,
    )


ONE_PER_TIMESTAMP = "a sensor has one reading per timestamp"
#: The unique index behind it (migration 0006).
_ONE_PER_TIMESTAMP_INDEX = "ux_telemetry_sensor_ts"
_READINGS = cast(Table, models.TelemetryReading.__table__)


def _write_new(db: Session, rows: StoredRows) -> bool:
    """Write the readings if none of their timestamps is taken for their sensor; False, with
    nothing written, if one is (the unique index says so, concurrent writers included).

    Optimistic: duplicates are rare, so the common path is the plain COPY (or executemany)
    inside a savepoint, and costs one round trip more plus the index."""
    conn = db.connection()
    if conn.dialect.name == "postgresql":
        pg: Any = conn.connection.driver_connection
        # On the driver's connection, like the COPY: no RELEASE (the commit does it).
        with pg.cursor() as cur:
            cur.execute("SAVEPOINT ingest_readings")
        try:
            _copy_rows(pg, rows)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != _ONE_PER_TIMESTAMP_INDEX:
                raise
            with pg.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT ingest_readings")
            return False
        return True
    nested = db.begin_nested()
    try:
        db.execute(insert(models.TelemetryReading), list(rows))
    except IntegrityError as exc:
        nested.rollback()
        if "telemetry_readings.sensor_id, telemetry_readings.ts" not in str(exc.orig):
            raise
        return False
    nested.commit()
    return True


def _store_new(db: Session, rows: StoredRows, origin: list[int] | None) -> StoredRows:
    """Insert the readings whose timestamps are free and return them; every other one must
    be a copy of the stored reading (same raw value), else a 422 names it.

    ON CONFLICT DO NOTHING waits for a concurrent writer of the same timestamp and skips the
    row once that one committed; the lookup after it (a new snapshot) then sees its value."""
    pg = db.get_bind().dialect.name == "postgresql"
    stmt = (pg_insert if pg else sqlite_insert)(_READINGS).on_conflict_do_nothing(
        index_elements=["sensor_id", "ts"]
    )
    inserted = {utctime.micros(ts) for ts in db.scalars(stmt.returning(_READINGS.c.ts), list(rows))}
    micros = rows.micros()
    taken = [k for k, us in enumerate(micros) if us not in inserted]
    sensor_id = rows.fixed[1]
    stored: dict[int, float] = {}
    for lo in range(0, len(taken), 500):
        chunk = [rows.timestamps[k] for k in taken[lo : lo + 500]]
        found = db.execute(
            select(_READINGS.c.ts, _READINGS.c.raw_value).where(
                _READINGS.c.sensor_id == sensor_id, _READINGS.c.ts.in_(chunk)
            )
        )
        stored.update((utctime.micros(ts), raw) for ts, raw in found)
    errors = []
    for k in taken:
        other = stored.get(micros[k])
        if other is None:  # its writer rolled back after ours skipped it: cannot happen
            raise Conflict("a concurrent request wrote and withdrew these readings; send again")
        if other != rows.raw_values[k]:
            errors.append(
                FieldError(
                    f"readings.{origin[k] if origin else k}.timestamp",
                    f"this sensor already has a reading at this timestamp with raw_value"
                    f" {other!r}; {ONE_PER_TIMESTAMP}",
                )
            )
    if errors:
        raise _refused(errors, "another value at the timestamp of a stored reading")
    keep = [k for k, us in enumerate(micros) if us in inserted]
    return StoredRows(
        fixed=rows.fixed,
        timestamps=[rows.timestamps[k] for k in keep],
        raw_values=[rows.raw_values[k] for k in keep],
        values=[rows.values[k] for k in keep],
        metas=[rows.metas[k] for k in keep],
        stamps_us=[micros[k] for k in keep],
    )


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


def _accepted(record: models.TelemetryBatch, received: int) -> TelemetryAccepted:
    """The answer to a batch of ``received`` readings of which ``record.count`` were stored
    (the others were copies of stored readings)."""
    return TelemetryAccepted(
        accepted=record.count,
        late=record.late,
        duplicate=received - record.count,
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
