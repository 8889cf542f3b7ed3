"""One chunk of a reprocessing job: the next readings of its scope converted under its
version, their values and the job's progress committed together.

A chunk reads in a transaction of its own that writes nothing (on SQLite: beside the
writer, without its lock) and converts in Python; only then does it open the write
transaction, which stores the values and moves the job on **only if the job is as the
chunk read it** (``status = 'running' AND done = <done read>``: a compare-and-set on the
job's row). So the write transaction is short (the inserts and one row update: ingest
waits for no conversion, on SQLite either), a chunk is all or nothing (a kill -9 before its
commit leaves the job where the previous chunk left it, and the chunk is done again; after
it, it is not), and two runners that got hold of the same job (a partition between them
and the advisory lock's holder, a second SQLite process) cannot both store a chunk: the
second one's compare-and-set matches no row and it rolls back. A cancel is the same: it
changes the status, and the next chunk's compare-and-set fails.

Chunks go through the scope in timestamp order on ``ux_telemetry_sensor_ts`` (the sensor's
readings in order; there is no index by sensor and id, and one more would slow every
ingest). A sensor has one reading per timestamp, so "after the last converted reading's
timestamp" names exactly the readings not gone through yet. The scope's ``max_id`` leaves
out readings stored after the job was accepted: those were converted by the version
effective at their timestamps when they arrived.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.uow import discard, read_only, transaction
from cloud.services import reprocess
from cloud.store.telemetry import telemetry_store
from common.profiles import ConversionError, Converter, build_converter

J, T, V, P = (
    models.ReprocessJob,
    models.TelemetryReading,
    models.ReprocessedValue,
    models.SensorProfile,
)
_VALUES = cast(Table, V.__table__)

_PG_UPSERT = text(
    "INSERT INTO reprocessed_values (reading_id, profile_version, value, job_id)"
    " SELECT v.reading_id, :version, v.value, :job_id"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:values AS float8[])) AS v(reading_id, value)"
    " ON CONFLICT (reading_id, profile_version)"
    " DO UPDATE SET value = excluded.value, job_id = excluded.job_id"
    " WHERE reprocessed_values.job_id <> excluded.job_id"
)
_sqlite_insert = sqlite_insert(_VALUES)
_SQLITE_UPSERT = _sqlite_insert.on_conflict_do_update(
    index_elements=["reading_id", "profile_version"],
    set_={"value": _sqlite_insert.excluded.value, "job_id": _sqlite_insert.excluded.job_id},
    where=_VALUES.c.job_id != _sqlite_insert.excluded.job_id,
)


class ConvertedTwice(RuntimeError):
    """A chunk found values its own job stored already: a reading would be converted twice
    (cannot happen while each chunk commits its values with its progress)."""


@dataclass
class Chunk:
    """What one chunk read and converted."""

    version: str
    done_before: int
    from_before: list[str]
    last_ts: datetime | None = None
    read: int = 0
    ids: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    unchanged: int = 0
    unconvertible: int = 0
    versions: set[str] = field(default_factory=set)


def start(sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    """queued -> running (no-op if it is running already, or ended)."""
    with transaction(sessions) as db:
        db.execute(
            update(J)
            .where(J.id == job_id, J.status == "queued")
            .values(status="running", started_at=datetime.now(UTC))
        )


def step(
    readers: sessionmaker[Session], writers: sessionmaker[Session], job_id: uuid.UUID, size: int
) -> bool:
    """Convert and commit the job's next chunk of at most ``size`` readings, or end the job
    when none are left; whether there may be more to do."""
    chunk = _read(readers, job_id, size)
    if chunk is None:
        return False  # not running (cancelled, ended, or gone)
    with transaction(writers) as db:
        moved = _changed(
            db,
            update(J)
            .where(J.id == job_id, J.status == "running", J.done == chunk.done_before)
            .values(
                done=J.done + chunk.read,
                converted=J.converted + len(chunk.ids),
                unchanged=J.unchanged + chunk.unchanged,
                unconvertible=J.unconvertible + chunk.unconvertible,
                cursor_ts=chunk.last_ts if chunk.read else J.cursor_ts,
                from_versions=sorted(set(chunk.from_before) | chunk.versions),
            ),
        )
        if moved != 1:  # cancelled, or another runner moved it: store nothing
            discard(db)
            return True
        if chunk.ids:
            _store(db, job_id, chunk)
        if chunk.read < size:  # the scope's end: the job is done, in the same transaction
            db.execute(
                update(J)
                .where(J.id == job_id)
                .values(status="succeeded", finished_at=datetime.now(UTC))
            )
            job = db.get(J, job_id)
            assert job is not None
            reprocess.record_finished(db, job, "system:reprocess")
            return False
    return True


def fail(sessions: sessionmaker[Session], job_id: uuid.UUID, error: str) -> None:
    """Mark a running job failed, saying why (its chunks so far stay stored)."""
    with transaction(sessions) as db:
        failed = _changed(
            db,
            update(J)
            .where(J.id == job_id, J.status.in_(reprocess.PENDING))
            .values(status="failed", error=error[:2000], finished_at=datetime.now(UTC)),
        )
        if failed == 1:
            job = db.get(J, job_id)
            assert job is not None
            reprocess.record_finished(db, job, "system:reprocess")


def _read(readers: sessionmaker[Session], job_id: uuid.UUID, size: int) -> Chunk | None:
    """The job's next readings, converted (None: the job is not running)."""
    with read_only(readers) as db:
        job = db.get(J, job_id)
        if job is None or job.status != "running":
            return None
        chunk = Chunk(
            job.profile_version, done_before=job.done, from_before=list(job.from_versions or [])
        )
        if job.max_id is None:  # no reading in the scope
            return chunk
        convert = _converter(db, job)
        store = telemetry_store(db)
        store.plan_by_index()
        # On the connection, without the timestamps: the ORM's result layer and a UTC
        # datetime made per row were a third of a chunk's time. The last one is looked up.
        rows = store.conn.execute(
            select(T.id, T.raw_value, T.meta, T.profile_version)
            .where(*_remaining(job))
            .order_by(T.ts)
            .limit(size)
        ).all()
        if rows:
            chunk.last_ts = db.scalar(select(T.ts).where(T.id == rows[-1][0]))
    _convert_into(chunk, rows, convert)
    return chunk


def _remaining(job: models.ReprocessJob) -> list[Any]:
    conds = reprocess.scope_of(job.sensor_id, job.run_id, None, None)
    conds += [T.ts >= job.first_ts, T.ts <= job.last_ts, T.id <= job.max_id]
    if job.cursor_ts is not None:
        conds.append(T.ts > job.cursor_ts)
    return conds


def _convert_into(chunk: Chunk, rows: Any, convert: Converter) -> None:
    ids, values, version = chunk.ids, chunk.values, chunk.version
    for rid, raw, meta, first in rows:
        chunk.versions.add(first)
        if first == version:  # its first value is this version's
            chunk.unchanged += 1
            continue
        try:
            values.append(convert.convert(raw, meta))
        except ConversionError:
            chunk.unconvertible += 1
            continue
        ids.append(rid)
    chunk.read = len(rows)


def _converter(db: Session, job: models.ReprocessJob) -> Converter:
    """The job's version's converter, built as ingest builds it (its units included)."""
    profile = db.scalars(
        select(P).where(P.sensor_id == job.sensor_id, P.version == job.profile_version)
    ).one()
    return build_converter(
        profile.kind, profile.payload, profile.display_unit, profile.input_unit, lenient=True
    )


def _store(db: Session, job_id: uuid.UUID, chunk: Chunk) -> None:
    """The chunk's values under its version (a value stored by an earlier job under the
    same version is replaced: versions do not change, so it is the same value). One this
    job stored already is not written again but refused (:class:`ConvertedTwice`): the
    guarantee that each reading is converted once is checked, not only designed."""
    conn = db.connection()
    result: CursorResult[Any]
    if conn.dialect.name == "postgresql":
        # The arrays as array literals: psycopg's dump of a list of 5,000 floats cost more
        # than the insert. repr() of a float reads back as the same float.
        ids = "{" + ",".join(map(str, chunk.ids)) + "}"
        values = "{" + ",".join(map(repr, chunk.values)) + "}"
        result = conn.execute(
            _PG_UPSERT, {"version": chunk.version, "job_id": job_id, "ids": ids, "values": values}
        )
    else:
        result = conn.execute(
            _SQLITE_UPSERT,
            [
                {"reading_id": rid, "profile_version": chunk.version, "value": v, "job_id": job_id}
                for rid, v in zip(chunk.ids, chunk.values, strict=True)
            ],
        )
    if result.rowcount != len(chunk.ids):
        raise ConvertedTwice(
            f"{len(chunk.ids) - result.rowcount} readings of this chunk were converted by"
            " this job already"
        )


def _changed(db: Session, statement: Any) -> int:
    """Run an UPDATE; the rows it changed."""
    return cast(CursorResult[Any], db.execute(statement)).rowcount
