"""Exports of readings, streamed from a server-side cursor in constant memory: CSV here, Parquet
and Arrow in :mod:`cloud.services.telemetry_columns`.

The export holds its own read transaction for as long as the response streams (the request's
transaction ends when the route returns) and gives its connection back when the stream ends,
fails or the client goes away.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.uow import read_only
from cloud.services import columnar, telemetry_description, versioned
from cloud.services.telemetry_query import ReadingFilter

T = models.TelemetryReading

HEADER = (
    "timestamp",
    "sensor_id",
    "run_id",
    "capture_session_id",
    "raw_value",
    "raw_unit",
    "value",
    "value_unit",
    "profile_version",
    "late",
)
#: (input unit, display unit) by (sensor, profile version).
Units = dict[tuple[uuid.UUID, str], tuple[str, str]]
#: Rows fetched from the database and written out per chunk of the response.
ROWS_PER_CHUNK = 2000

#: First characters with which a spreadsheet reads a cell as a formula (or, for tab and CR,
#: lets one through after them).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: str | None) -> str:
    """A text cell that a spreadsheet shows as text: one that would start a formula gets a
    leading single quote (OWASP's advice against CSV injection). Numbers are not text cells:
    a negative value is data and is written as it is."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_START) else value


def csv_rows(rows: Iterable[Any], unit_of: Units) -> Iterable[list[str]]:
    """Export rows (ts, sensor_id, run_id, capture_session_id, raw_value, value,
    profile_version, late) as CSV cells, with the units of each reading's profile version;
    floats exactly (repr round-trips)."""
    for ts, sensor_id, run_id, session_id, raw_value, value, version, late in rows:
        raw_unit, value_unit = unit_of.get((sensor_id, version), ("", ""))
        yield [
            ts.isoformat(),
            str(sensor_id),
            "" if run_id is None else str(run_id),
            "" if session_id is None else str(session_id),
            repr(raw_value),
            text_cell(raw_unit),
            repr(value),
            text_cell(value_unit),
            text_cell(version),
            "true" if late else "false",
        ]


@contextmanager
def read_snapshot(sessions: sessionmaker[Session], stall_timeout_s: float) -> Iterator[Session]:
    """A read-only transaction of its own for one export, on one snapshot: what describes
    the export (its runs, sensors, units) and its rows are read as of the same moment.

    A client that stops reading stops the export's cursor too; after ``stall_timeout_s`` of
    that PostgreSQL ends the transaction (idle_in_transaction_session_timeout), so that no
    reader holds a snapshot, and vacuum back, for as long as it likes. SQLite's read
    transaction is a snapshot of the WAL from its first read."""
    with read_only(sessions) as db:  # never committed: closing it rolls it back
        if db.get_bind().dialect.name == "postgresql":
            db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            ms = str(max(1, int(stall_timeout_s * 1000)))  # is_local: for this transaction
            db.execute(select(func.set_config("idle_in_transaction_session_timeout", ms, True)))
        yield db


def csv_chunks(
    sessions: sessionmaker[Session], f: ReadingFilter, unit_of: Units, stall_timeout_s: float
) -> Generator[bytes]:
    """The export as bytes, a chunk per :data:`ROWS_PER_CHUNK` readings.

    ``stream_results`` makes psycopg use a server-side cursor on PostgreSQL and SQLite step
    through its cursor, so that only one chunk of rows is in memory at a time."""
    conds = f.where()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    with read_snapshot(sessions, stall_timeout_s) as db:
        value, version = versioned.value_columns(f.versions)
        result = db.execute(
            select(
                T.ts,
                T.sensor_id,
                T.run_id,
                T.capture_session_id,
                T.raw_value,
                value,
                version,
                T.late,
            )
            .select_from(versioned.source(f.versions))
            .where(*conds)
            .order_by(T.ts, T.id),
            execution_options={"stream_results": True, "yield_per": ROWS_PER_CHUNK},
        )
        for part in result.partitions():
            writer.writerows(csv_rows(part, unit_of))
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    tail = buf.getvalue()
    if tail:
        yield tail.encode()


def filename(f: ReadingFilter, what: str, extension: str) -> str:
    """``telemetry-run-<id>.parquet``: what was exported, by the narrowest id given."""
    for label, ident in (
        ("session", f.capture_session_id),
        ("run", f.run_id),
        ("sensor", f.sensor_id),
    ):
        if ident is not None:
            return f"{what}-{label}-{ident}.{extension}"
    return f"{what}.{extension}"


def attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


#: The header declaring how many rows (readings, metric points) an export holds, so that a
#: client can show its progress as a share: a streamed export has no Content-Length.
ROWS_HEADER = "Benchlink-Rows"


def count_readings(db: Session, f: ReadingFilter) -> int:
    """The readings ``f`` selects, counted in the request's transaction before the export
    starts (an index-only count: a few percent of the export's time). Readings that arrive
    between this count and the export's snapshot make the export a little longer than the
    header said; a client caps its share at 100%."""
    return db.scalar(select(func.count()).select_from(T).where(*f.where())) or 0


class ClosingStreamingResponse(StreamingResponse):
    """Streams a generator (each step in a worker thread) and closes it however the response
    ends, so that a client that disconnects does not leave its transaction open until the
    garbage collector finds the generator."""

    def __init__(self, chunks: Generator[bytes], **kwargs: Any) -> None:
        super().__init__(chunks, **kwargs)
        self._chunks = chunks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: on a disconnect this runs inside a cancelled scope, and the connection
            # must still go back to the pool. No thread is inside the generator by now (a
            # worker-thread call is waited for even when cancelled).
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._chunks.close)


def columnar_chunks(
    sessions: sessionmaker[Session],
    f: ReadingFilter,
    fmt: columnar.ExportFormat,
    stall_timeout_s: float,
) -> Generator[bytes]:
    """The export as Parquet or Arrow: the description first (from the same snapshot as the
    rows), then the rows a batch at a time."""
    # pyarrow's module, imported at the first columnar export (cloud.services.columnar).
    from cloud.services import telemetry_columns

    with read_snapshot(sessions, stall_timeout_s) as db:
        d = telemetry_description.describe(db, f)
        with closing(telemetry_columns.batches(db, f, d)) as batches:
            yield from columnar.chunks(fmt, telemetry_columns.schema(d), batches)


def response(
    sessions: sessionmaker[Session],
    f: ReadingFilter,
    fmt: columnar.ExportFormat,
    unit_of: Units,
    stall_timeout_s: float,
    rows: int,
) -> StreamingResponse:
    """The export of ``f`` as a streamed download in ``fmt``, of about ``rows`` readings
    (:func:`count_readings`, declared in :data:`ROWS_HEADER`)."""
    f.where()  # a bad filter is refused before the response starts
    if fmt == "csv":
        chunks = csv_chunks(sessions, f, unit_of, stall_timeout_s)
    else:
        chunks = columnar_chunks(sessions, f, fmt, stall_timeout_s)
    kind = columnar.FORMATS[fmt]
    return ClosingStreamingResponse(
        chunks,
        media_type=kind.media_type,
        headers={
            **attachment(filename(f, "telemetry", kind.extension)),
            ROWS_HEADER: str(rows),
        },
    )
