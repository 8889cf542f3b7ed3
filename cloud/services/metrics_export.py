"""A run's metrics exported as CSV, Parquet or Arrow, streamed in the list's order (name,
step) from a server-side cursor in its own read snapshot, as the telemetry exports are."""

from __future__ import annotations

import csv
import functools
import io
import uuid
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.services import columnar
from cloud.services.telemetry_description import SCHEMA_VERSION, experiment_json, iso, run_json
from cloud.services.telemetry_export import (
    ROWS_HEADER,
    ClosingStreamingResponse,
    read_snapshot,
    text_cell,
)

if TYPE_CHECKING:
    import pyarrow as pa

M = models.Metric
PAGE_ROWS = 20_000
HEADER = ("name", "step", "value", "timestamp", "unit")


@functools.cache
def schema() -> pa.Schema:
    """The columns of a Parquet or Arrow export; pyarrow is imported at the first one
    (:mod:`cloud.services.columnar`)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("step", pa.int64(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("unit", pa.string()),
        ]
    )


def _pages(db: Session, run_id: uuid.UUID, name: str | None) -> Iterator[list[Any]]:
    q = select(M.name, M.step, M.value, M.ts, M.unit).where(M.run_id == run_id)
    if name is not None:
        q = q.where(M.name == name)
    result = db.execute(
        q.order_by(M.name, M.step, M.id),
        execution_options={"stream_results": True, "yield_per": PAGE_ROWS},
    )
    for part in result.partitions():
        yield list(part)


def count_points(db: Session, run_id: uuid.UUID, name: str | None) -> int:
    """The points the export will hold, for its :data:`ROWS_HEADER` (counted before it
    starts, as :func:`cloud.services.telemetry_export.count_readings` is)."""
    q = select(func.count()).select_from(M).where(M.run_id == run_id)
    if name is not None:
        q = q.where(M.name == name)
    return db.scalar(q) or 0


def _describe(db: Session, run_id: uuid.UUID, name: str | None) -> dict[str, Any]:
    run = db.get(models.Run, run_id)
    assert run is not None  # the route found it in the caller's project
    experiment = db.get(models.Experiment, run.experiment_id)
    assert experiment is not None
    return {
        "kind": "metrics",
        "schema_version": SCHEMA_VERSION,
        "exported_at": iso(datetime.now(UTC)),
        "project_id": str(run.project_id),
        "filter": {"run_id": str(run_id), **({"name": name} if name is not None else {})},
        "experiments": [experiment_json(experiment)],
        "runs": [run_json(run)],
    }


def _batches(db: Session, run_id: uuid.UUID, name: str | None) -> Generator[pa.RecordBatch]:
    import pyarrow as pa

    columns = schema()
    for rows in _pages(db, run_id, name):
        names, steps, values, stamps, units = zip(*rows, strict=True)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(names, pa.string()),
                pa.array(steps, pa.int64()),
                pa.array(values, pa.float64()),
                pa.array(stamps, columns.field("timestamp").type),
                pa.array(units, pa.string()),
            ],
            schema=columns,
        )


def _columnar(
    sessions: sessionmaker[Session],
    run_id: uuid.UUID,
    name: str | None,
    fmt: columnar.ExportFormat,
    stall_timeout_s: float,
) -> Generator[bytes]:
    with read_snapshot(sessions, stall_timeout_s) as db:
        described = columnar.with_description(schema(), _describe(db, run_id, name))
        with closing(_batches(db, run_id, name)) as batches:
            yield from columnar.chunks(fmt, described, batches)


def _csv(
    sessions: sessionmaker[Session], run_id: uuid.UUID, name: str | None, stall_timeout_s: float
) -> Generator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER)
    with read_snapshot(sessions, stall_timeout_s) as db:
        for rows in _pages(db, run_id, name):
            writer.writerows(
                [text_cell(n), str(step), repr(v), ts.isoformat(), text_cell(unit)]
                for n, step, v, ts, unit in rows
            )
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def response(
    sessions: sessionmaker[Session],
    run_id: uuid.UUID,
    name: str | None,
    fmt: columnar.ExportFormat,
    stall_timeout_s: float,
    rows: int,
) -> ClosingStreamingResponse:
    chunks = (
        _csv(sessions, run_id, name, stall_timeout_s)
        if fmt == "csv"
        else _columnar(sessions, run_id, name, fmt, stall_timeout_s)
    )
    kind = columnar.FORMATS[fmt]
    return ClosingStreamingResponse(
        chunks,
        media_type=kind.media_type,
        headers={
            "Content-Disposition": (
                f'attachment; filename="metrics-run-{run_id}.{kind.extension}"'
            ),
            ROWS_HEADER: str(rows),
        },
    )
