"""Readings as Arrow record batches, for the Parquet and Arrow exports.

The file describes itself: its schema has the column types (timestamps in UTC, values as
float64) and its metadata the experiments, runs (params, tags), capture sessions and sensors
(units, every conversion profile) of the readings, read from the same snapshot as the rows
(:func:`cloud.services.telemetry_export.read_snapshot`).

Ids, sensor names, profile versions and units are dictionary columns over dictionaries known
before the first row (those of the description): every batch shares them, so an Arrow stream
sends each once, Parquet stores small integers, and pandas and polars read categoricals.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import pq
from psycopg.postgres import types as pg_types
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.services import versioned
from cloud.services.columnar import with_description
from cloud.services.telemetry_description import Description
from cloud.services.telemetry_query import ReadingFilter

T = models.TelemetryReading
TIMESTAMP = pa.timestamp("us", tz="UTC")
ID = pa.dictionary(pa.int32(), pa.string())
#: Rows fetched from the database per batch: ~450 bytes each as Python objects while they
#: are turned into columns, so a page is ~10 MB of the API's memory at most.
PAGE_ROWS = 10_000
#: PostgreSQL's binary timestamptz is microseconds since 2000-01-01 UTC.
PG_EPOCH_US = 946_684_800_000_000

SCHEMA = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("sensor_id", ID, nullable=False),
        pa.field("sensor", ID, nullable=False),
        pa.field("run_id", ID, nullable=False),
        pa.field("capture_session_id", ID, nullable=False),
        pa.field("raw_value", pa.float64(), nullable=False),
        pa.field("raw_unit", ID),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("value_unit", ID),
        pa.field("profile_version", ID, nullable=False),
        pa.field("late", pa.bool_(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Page:
    """One page of readings as columns: ids as their 16 bytes, not yet coded."""

    ts: pa.Array
    sensor: pa.Array
    run: pa.Array
    session: pa.Array
    raw_value: pa.Array
    value: pa.Array
    version: pa.Array
    late: pa.Array


class Dictionaries:
    """The export's dictionaries and how a page's values map onto them."""

    def __init__(self, d: Description) -> None:
        self.sensor_keys = _keys(s.id for s in d.sensors)
        self.sensor_ids = pa.array([str(s.id) for s in d.sensors], pa.string())
        self.sensor_names = pa.array([s.name for s in d.sensors], pa.string())
        self.run_keys = _keys(r.id for r in d.runs)
        self.run_ids = pa.array([str(r.id) for r in d.runs], pa.string())
        self.session_keys = _keys(s.id for s in d.sessions)
        self.session_ids = pa.array([str(s.id) for s in d.sessions], pa.string())
        versions = sorted({p.version for p in d.profiles})
        self.versions = pa.array(versions, pa.string())
        units = sorted({u for p in d.profiles for u in (p.input_unit, p.display_unit)})
        self.units = pa.array(units, pa.string())
        # Units by (sensor, version): code sensor * len(versions) + version.
        slot = {v: i for i, v in enumerate(versions)}
        unit = {u: i for i, u in enumerate(units)}
        sensor = {s.id: i for i, s in enumerate(d.sensors)}
        raw: list[int | None] = [None] * max(1, len(sensor) * len(versions))
        shown = list(raw)
        for p in d.profiles:
            k = sensor[p.sensor_id] * len(versions) + slot[p.version]
            raw[k], shown[k] = unit[p.input_unit], unit[p.display_unit]
        self.raw_unit_of = pa.array(raw, pa.int32())
        self.value_unit_of = pa.array(shown, pa.int32())

    def batch(self, page: Page) -> pa.RecordBatch:
        sensor = pc.index_in(page.sensor, value_set=self.sensor_keys)
        version = pc.index_in(page.version, value_set=self.versions)
        profile = pc.add(pc.multiply(sensor, len(self.versions)), version)
        coded = pa.DictionaryArray.from_arrays
        columns = [
            page.ts,
            coded(sensor, self.sensor_ids),
            coded(sensor, self.sensor_names),
            coded(pc.index_in(page.run, value_set=self.run_keys), self.run_ids),
            coded(pc.index_in(page.session, value_set=self.session_keys), self.session_ids),
            page.raw_value,
            coded(pc.take(self.raw_unit_of, profile), self.units),
            page.value,
            coded(pc.take(self.value_unit_of, profile), self.units),
            coded(version, self.versions),
            page.late,
        ]
        return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _keys(ids: Any) -> pa.Array:
    return pa.array([i.bytes for i in ids], pa.binary(16))


def _statement(f: ReadingFilter) -> Any:
    value, version = versioned.value_columns(f.versions)
    return (
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
        .where(*f.where())
        .order_by(T.ts, T.id)
    )


def _pg_pages(conn: Connection, f: ReadingFilter) -> Generator[Page]:
    """Pages from a binary server-side cursor of psycopg, in this transaction.

    Timestamps are loaded as the int64 they are on the wire and ids as their 16 bytes
    (psycopg's C loaders for int8 and bytea): no datetime or UUID object is made per row,
    which would cost more than the fetch."""
    pg = conn.connection.driver_connection
    assert pg is not None
    compiled = _statement(f).compile(dialect=conn.dialect)
    binary = pq.Format.BINARY
    int8 = pg.adapters.get_loader(pg_types["int8"].oid, binary)
    raw_bytes = pg.adapters.get_loader(pg_types["bytea"].oid, binary)
    assert int8 is not None and raw_bytes is not None
    with pg.cursor(name=f"export_{uuid.uuid4().hex}", binary=True) as cur:
        cur.adapters.register_loader("timestamptz", int8)
        cur.adapters.register_loader("uuid", raw_bytes)
        cur.execute(compiled.string, compiled.params)
        while rows := cur.fetchmany(PAGE_ROWS):
            ts, sensor, run, session, raw, value, version, late = zip(*rows, strict=True)
            del rows
            micros = pc.add(pa.array(ts, pa.int64()), PG_EPOCH_US)
            yield _page(micros.cast(TIMESTAMP), sensor, run, session, raw, value, version, late)


def _sqlite_pages(db: Session, f: ReadingFilter) -> Generator[Page]:
    result = db.execute(
        _statement(f), execution_options={"stream_results": True, "yield_per": PAGE_ROWS}
    )
    for part in result.partitions():
        ts, sensor, run, session, raw, value, version, late = zip(*part, strict=True)
        del part
        s, r, c = ([u.bytes for u in col] for col in (sensor, run, session))
        yield _page(pa.array(ts, TIMESTAMP), s, r, c, raw, value, version, late)


def _page(ts: pa.Array, sensor: Sequence[bytes], run: Sequence[bytes],
          session: Sequence[bytes], raw: Sequence[float], value: Sequence[float],
          version: Sequence[str], late: Sequence[bool]) -> Page:  # fmt: skip
    key = pa.binary(16)
    return Page(
        ts=ts,
        sensor=pa.array(sensor, key),
        run=pa.array(run, key),
        session=pa.array(session, key),
        raw_value=pa.array(raw, pa.float64()),
        value=pa.array(value, pa.float64()),
        version=pa.array(version, pa.string()),
        late=pa.array(late, pa.bool_()),
    )


def batches(db: Session, f: ReadingFilter, d: Description) -> Generator[pa.RecordBatch]:
    """The filter's readings in (timestamp, id) order, a batch per :data:`PAGE_ROWS`."""
    codes = Dictionaries(d)
    conn = db.connection()
    pages = _pg_pages(conn, f) if conn.dialect.name == "postgresql" else _sqlite_pages(db, f)
    try:
        for page in pages:
            yield codes.batch(page)
    finally:
        pages.close()  # the server-side cursor is closed before the transaction ends


def schema(d: Description) -> pa.Schema:
    """The export's schema, with ``d`` in its metadata."""
    return with_description(SCHEMA, d.as_json())
