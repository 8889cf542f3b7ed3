"""The telemetry store on PostgreSQL: readings by binary COPY, a batch's summaries as arrays
in one upsert, chart buckets aggregated in the database, live read-back through psycopg."""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

import psycopg
from sqlalchemy import (
    BigInteger,
    Interval,
    Table,
    bindparam,
    case,
    column,
    func,
    literal_column,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult

from cloud import utctime
from cloud.db import models
from cloud.store.telemetry.base import (
    COLUMNS,
    ONE_PER_TIMESTAMP_INDEX,
    BatchRef,
    Bucket,
    Cell,
    LiveRow,
    RollupKey,
    Spans,
    StoredBatch,
    T,
    TelemetryStore,
    Values,
    Window,
    at,
    empty_window,
    in_time_order,
)
from cloud.utctime import isoformat_many
from common.reading import ENCODER

if TYPE_CHECKING:
    import numpy.typing as npt

#: PostgreSQL types of :data:`COLUMNS`, for binary COPY.
COPY_TYPES = [
    "uuid", "uuid", "uuid", "uuid", "int8", "timestamptz", "float8", "float8", "text", "bool",
    "jsonb", "int8",
]  # fmt: skip
_COPY = f"COPY telemetry_readings ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
#: PostgreSQL's binary COPY framing (see "Binary Format" in the COPY documentation).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # then flags and extension length, 0
_COPY_TRAILER = b"\xff\xff"
_COPY_NULL = b"\xff\xff\xff\xff"
#: timestamptz is microseconds since 2000-01-01 UTC; this many after the Unix epoch.
_PG_EPOCH_US = utctime.micros(datetime(2000, 1, 1, tzinfo=UTC))
#: The three columns that vary per reading, each with its length: ts, raw_value, value.
_VARYING = struct.Struct(">iqidid")
#: a reading's sequence number, with its length
_SEQ = struct.Struct(">iq")

_first = itemgetter(0)


#: Built once: every chart and list runs it, and building it cost more than running it.
_PLAN_BY_INDEX = select(
    func.set_config("jit", "off", True),
    func.set_config("enable_bitmapscan", "off", True),
    func.set_config("enable_sort", "off", True),
)


def _tuples(result: CursorResult[Any]) -> list[Bucket]:
    """A bucket query's rows as psycopg's own tuples: SQLAlchemy's Row objects for a chart's
    2,000 buckets cost more of the API's time than the query. No column needs a result
    processor (integers and floats), so the values are the same."""
    with result:
        return cast(list[Bucket], result.cursor.fetchall())


_READINGS = cast(Table, models.TelemetryReading.__table__)
#: A chart of first values: the readings alone.
_FIRST = Values(T.value, _READINGS)
_BATCHES = cast(Table, models.TelemetryBatch.__table__)
# The values as parameters of one statement built once: .values(**fields) makes a new
# statement, and a new cache key to compute, for every request.
_INSERT_BATCH = (
    insert(_BATCHES)
    .on_conflict_do_nothing(index_elements=["sensor_id", "idempotency_key"])
    .returning(_BATCHES.c.id)
)
_INSERT_FREE = (
    insert(_READINGS)
    .on_conflict_do_nothing(index_elements=["sensor_id", "ts"])
    .returning(_READINGS.c.ts)
)
# The whole batch's cells in one statement of fixed text (prepared once per connection), as
# arrays. ``lo``/``hi`` keep the smaller/larger of what is there and what comes.
_UPSERT_ROLLUPS = text(
    "INSERT INTO telemetry_rollups"
    " (sensor_id, level, cell, capture_session_id, run_id, n, total, lo, hi)"
    " SELECT :sensor_id, c.level, c.cell, :capture_session_id, :run_id, c.n, c.total, c.lo, c.hi"
    " FROM unnest(CAST(:levels AS smallint[]), CAST(:cells AS bigint[]), CAST(:ns AS integer[]),"
    " CAST(:totals AS float8[]), CAST(:los AS float8[]), CAST(:his AS float8[]))"
    " AS c(level, cell, n, total, lo, hi)"
    " ON CONFLICT (sensor_id, level, cell, capture_session_id) DO UPDATE SET"
    " n = telemetry_rollups.n + excluded.n,"
    " total = telemetry_rollups.total + excluded.total,"
    " lo = LEAST(telemetry_rollups.lo, excluded.lo),"
    " hi = GREATEST(telemetry_rollups.hi, excluded.hi)"
)
#: One batch's readings (see sqlite.batch_rows_query), the timestamp as
#: microseconds since the Unix epoch (``extract`` is exact numeric).
_BATCH_ROWS = (
    "SELECT (extract(epoch FROM ts) * 1000000)::int8, raw_value, value, late"
    " FROM telemetry_readings"
    " WHERE capture_session_id = %s AND sensor_id = %s AND ts BETWEEN %s AND %s"
    " AND batch_id = %s ORDER BY id"
)

#: A sensor's readings in a time range (``values_between``), in index order, as two arrays
#: in PostgreSQL's binary array format (``array_send``) that numpy reads whole: no number is
#: formatted, converted to numeric or made a Python object on the way (an alarm's rate reads
#: a window of them per batch; ``extract(epoch ...)``, exact but numeric, would cost more
#: than the read itself: bench/README.md).
_VALUES_BETWEEN = (
    "SELECT array_send(array_agg(ts)), array_send(array_agg(value)) FROM ("
    "SELECT ts, value FROM telemetry_readings"
    " WHERE sensor_id = %s AND ts BETWEEN %s AND %s ORDER BY ts) AS window_readings"
)

#: ``array_send``'s header: dimensions, has-NULLs flag, element type, then per dimension
#: its length and lower bound.
_ARRAY_HEADER = struct.Struct(">iiiii")
_TIMESTAMPTZ_OID, _FLOAT8_OID = 1184, 701


def copy_data(rows: StoredBatch) -> bytes:
    """The batch as a binary COPY stream of :data:`COLUMNS` (types :data:`COPY_TYPES`).

    Built here rather than row by row through psycopg's ``write_row``: seven of the eleven
    columns are the same for the whole batch and are encoded once, so a reading costs one
    ``struct.pack``."""
    uuids = (rows.project_id, rows.sensor_id, rows.run_id, rows.capture_session_id)
    head = (
        struct.pack(">h", len(COLUMNS))
        + b"".join(struct.pack(">i", 16) + u.bytes for u in uuids)
        + struct.pack(">iq", 8, rows.batch_id)
    )
    version = rows.profile_version.encode()
    tail = struct.pack(">i", len(version)) + version + struct.pack(">i?", 1, rows.late)
    tail_null = tail + _COPY_NULL
    pack = _VARYING.pack
    parts = [_COPY_SIGNATURE]
    append = parts.append
    # seq, the last column: NULL for the whole batch, or each reading's own number
    seqs: Any = rows.seqs
    if seqs is None:
        seqs = itertools.repeat(_COPY_NULL, len(rows.stamps_us))
    else:
        seqs = [_SEQ.pack(8, n) for n in seqs]
    for us, raw, value, meta, seq in zip(
        rows.stamps_us, rows.raw_values, rows.values, rows.metas, seqs, strict=True
    ):
        row = head + pack(8, us - _PG_EPOCH_US, 8, raw, 8, value)
        if meta is None:
            append(row + tail_null + seq)
        else:
            doc = ENCODER.encode(meta)  # jsonb's binary form: version 1, then the JSON text
            append(row + tail + struct.pack(">ib", len(doc) + 1, 1) + doc + seq)
    append(_COPY_TRAILER)
    return b"".join(parts)


def sent_window(stamps: bytes | None, values: bytes | None) -> Window:
    """A window of readings from its timestamps and values as ``array_send`` sends them
    (:data:`_VALUES_BETWEEN`'s columns; NULL, as an aggregate of no rows is: none)."""
    if stamps is None or values is None:
        return empty_window()
    import numpy as np  # at the first rate rule's batch, not when the app is built (RSS)

    ts = _sent_array(stamps, _TIMESTAMPTZ_OID, ">i8").astype(np.int64) + _PG_EPOCH_US
    return in_time_order(ts, _sent_array(values, _FLOAT8_OID, ">f8").astype(np.float64))


def _sent_array(data: bytes, oid: int, element: str) -> npt.NDArray[Any]:
    """The elements of a one-dimensional array without NULLs of an 8-byte type, from its
    ``array_send`` bytes: after the header, each element is its length (4 bytes) and its
    value (8, big-endian)."""
    ndim, has_nulls, elem_oid, n, _ = _ARRAY_HEADER.unpack_from(data)
    if ndim != 1 or has_nulls or elem_oid != oid or len(data) != _ARRAY_HEADER.size + 12 * n:
        raise ValueError(f"not a one-dimensional array of type {oid} without NULLs")
    import numpy as np

    cells = np.dtype([("length", ">i4"), ("value", element)])
    return np.frombuffer(data, cells, offset=_ARRAY_HEADER.size)["value"]


class PostgresStore(TelemetryStore):
    @property
    def _pg(self) -> Any:
        """psycopg's own connection, under SQLAlchemy's (same transaction)."""
        return self.conn.connection.driver_connection

    def insert_batch(self, fields: dict[str, Any]) -> int | None:
        return cast(int | None, self.conn.execute(_INSERT_BATCH, fields).scalar_one_or_none())

    def write(self, rows: StoredBatch) -> bool:
        # Optimistic: duplicates are rare, so the common path is the plain COPY inside a
        # savepoint, on the driver's connection like the COPY (no RELEASE: the commit does it).
        pg = self._pg
        with pg.cursor() as cur:
            cur.execute("SAVEPOINT ingest_readings")
        try:
            with pg.cursor() as cur, cur.copy(_COPY) as copy:
                copy.write(copy_data(rows))
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != ONE_PER_TIMESTAMP_INDEX:
                raise
            with pg.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT ingest_readings")
            return False
        return True

    def write_free(self, rows: StoredBatch) -> set[int]:
        written = self.conn.execute(_INSERT_FREE, rows.rows()).scalars()
        return {utctime.micros(ts) for ts in written}

    def values_between(self, sensor_id: uuid.UUID, first_us: int, last_us: int) -> Window:
        with self._pg.cursor(binary=True) as cur:
            cur.execute(_VALUES_BETWEEN, (sensor_id, at(first_us), at(last_us)))
            row = cur.fetchone()
        return sent_window(*row) if row is not None else empty_window()

    def add_rollups(self, key: RollupKey, cells: Sequence[Cell]) -> None:
        if not cells:
            return
        levels, ids, ns, totals, los, his = (list(col) for col in zip(*cells, strict=True))
        self.conn.execute(
            _UPSERT_ROLLUPS,
            {
                "sensor_id": key.sensor_id,
                "capture_session_id": key.capture_session_id,
                "run_id": key.run_id,
                "levels": levels,
                "cells": ids,
                "ns": ns,
                "totals": totals,
                "los": los,
                "his": his,
            },
        )

    def plan_by_index(self) -> None:
        """Readings arrive faster than statistics follow them: a session that was never
        analysed is estimated at a few dozen rows, and the planner then reads all of its
        readings through a bitmap and sorts them to find the first one, a cost that grows
        with the data. Every reading query has an index that gives its order and a LIMIT or
        a range that bounds it, so ruling out bitmap scans and sorts keeps the work to what
        is returned. is_local=true: the settings end with the request's transaction. JIT
        off: the estimated costs of the bucket queries are far above jit_above_cost, and
        compiling them costs more than it saves."""
        self.conn.execute(_PLAN_BY_INDEX)

    def _merged_page(self, sensors: list[uuid.UUID], conds: list[Any], n: int) -> list[Any]:
        # A member's own ORDER BY and LIMIT (in parentheses) bound each arm whatever the plan.
        arms = [
            select(T.__table__).where(*conds, T.sensor_id == s).order_by(T.ts, T.id).limit(n)
            for s in sensors
        ]
        merged = union_all(*arms)
        ts, rid = merged.selected_columns.ts, merged.selected_columns.id
        return list(self.conn.execute(merged.order_by(ts, rid).limit(n)))

    def buckets(self, conds: list[Any], spans: Spans, values: Values | None = None) -> list[Bucket]:
        values = values or _FIRST
        if spans.fine:
            return self._buckets_scan(conds, spans, values)
        return self._buckets_lateral(conds, spans, values)

    def _buckets_lateral(self, conds: list[Any], spans: Spans, values: Values) -> list[Bucket]:
        # One index range scan per bucket (LATERAL), in time order, each aggregated on its
        # own: no per-row bucket arithmetic and no hash of the groups (the planner expected a
        # million of them). With ix_telemetry_session_sensor_ts covering ts, value and
        # project_id (migration 0002) the scans of a session's chart are index-only. Bucket 0
        # starts at or before the first reading and the last bucket is open-ended, so every
        # reading is counted.
        count = spans.count
        k = (
            func.generate_series(0, count - 1)
            .table_valued(column("k", BigInteger))
            .render_derived()
        )
        t0 = bindparam("t0", at(spans.start), type_=T.ts.type)
        one_us = literal_column("interval '1 microsecond'", Interval)

        def edge(i: Any) -> Any:
            return t0 + (i * spans.span) * one_us

        hi = case(
            (k.c.k == count - 1, literal_column("'infinity'::timestamptz")), else_=edge(k.c.k + 1)
        )
        value = values.value
        agg = (
            select(
                func.sum(value).label("s"),
                func.min(value).label("lo"),
                func.max(value).label("hi"),
                func.count().label("n"),
            )
            .select_from(values.source)
            .where(*conds, T.ts >= edge(k.c.k), T.ts < hi)
            .lateral("agg")
        )
        return _tuples(
            self.conn.execute(
                select(k.c.k, agg.c.s, agg.c.lo, agg.c.hi, agg.c.n)
                .select_from(k)
                .join(agg, true())
                .where(agg.c.n > 0)
                .order_by(k.c.k)
            )
        )

    def _buckets_scan(self, conds: list[Any], spans: Spans, values: Values) -> list[Bucket]:
        # 1 us cells span fewer than max_points cells of 10 ms (20 s for 2000 points), so
        # the readings are few enough for one range scan grouped by date_bin() (integer
        # microseconds, in C): cheaper than a range scan per bucket when the buckets hold a
        # few readings each. Every reading is at or after bucket 0's start and at or before
        # the last reading, so no bucket is open-ended here.
        start, span = spans.start, spans.span
        stride = literal_column(f"interval '{span} microseconds'", Interval)
        t0 = bindparam("t0", at(start), type_=T.ts.type)
        b = func.date_bin(stride, T.ts, t0).label("b")
        value = values.value
        grouped = (
            select(
                b,
                func.sum(value).label("s"),
                func.min(value).label("lo"),
                func.max(value).label("hi"),
                func.count().label("n"),
            )
            .select_from(values.source)
            .where(*conds)
            .group_by(b)
            .subquery()
        )
        # The bucket's number computed here, once per bucket: a bigint for each row instead
        # of a timestamp that Python parsed into a datetime only to take it apart again (that
        # was most of a zoomed chart's time in the API). extract() is exact: numeric seconds.
        us = sa_cast(func.extract("epoch", grouped.c.b) * 1_000_000, BigInteger)
        k = ((us - start) // span).label("k")
        rows = _tuples(
            self.conn.execute(select(k, grouped.c.s, grouped.c.lo, grouped.c.hi, grouped.c.n))
        )
        rows.sort(key=_first)
        return rows

    def batch_rows(self, batches: Sequence[BatchRef]) -> dict[int, list[LiveRow]]:
        # Through psycopg itself, in binary: on the live path of every batch another process
        # ingested, SQLAlchemy's result rows cost twice the read.
        out: dict[int, list[LiveRow]] = {}
        with self._pg.cursor(binary=True) as cur:
            for h in batches:
                params = (h.capture_session_id, h.sensor_id, h.first_ts, h.last_ts, h.batch_id)
                cur.execute(_BATCH_ROWS, params)
                found = cur.fetchall()
                stamps = isoformat_many(us for us, _, _, _ in found)
                out[h.batch_id] = [
                    (ts, float(raw), float(value), late)
                    for ts, (_, raw, value, late) in zip(stamps, found, strict=True)
                ]
        return out
