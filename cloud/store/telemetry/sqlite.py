"""The telemetry store on SQLite: in-process, so a statement per bucket or per batch costs
no round trip; executemany where PostgreSQL copies, a loop where it joins LATERAL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, union_all
from sqlalchemy.dialects.sqlite import insert as upsert
from sqlalchemy.exc import IntegrityError

from cloud import utctime
from cloud.db import models
from cloud.store.telemetry.base import (
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
    at,
)

_READINGS = cast(Table, models.TelemetryReading.__table__)
_BATCHES = cast(Table, models.TelemetryBatch.__table__)
_ROLLUPS = cast(Table, models.TelemetryRollup.__table__)
_INSERT_BATCH = (
    upsert(_BATCHES)
    .on_conflict_do_nothing(index_elements=["sensor_id", "idempotency_key"])
    .returning(_BATCHES.c.id)
)
_INSERT_FREE = (
    upsert(_READINGS)
    .on_conflict_do_nothing(index_elements=["sensor_id", "ts"])
    .returning(_READINGS.c.ts)
)
_TAKEN = "telemetry_readings.sensor_id, telemetry_readings.ts"  # the unique index's message
_upsert_rollups = upsert(_ROLLUPS)
_UPSERT_ROLLUPS = _upsert_rollups.on_conflict_do_update(
    index_elements=["sensor_id", "level", "cell", "capture_session_id"],
    set_={
        "n": _ROLLUPS.c.n + _upsert_rollups.excluded.n,
        "total": _ROLLUPS.c.total + _upsert_rollups.excluded.total,
        "lo": func.min(_ROLLUPS.c.lo, _upsert_rollups.excluded.lo),
        "hi": func.max(_ROLLUPS.c.hi, _upsert_rollups.excluded.hi),
    },
)
# The bounds are bound through the column's type, exactly as since/until.
_LO, _HI = bindparam("lo", type_=T.ts.type), bindparam("hi", type_=T.ts.type)


def batch_rows_query(h: BatchRef) -> Any:
    """One batch's readings in stored (= sent) order. Session, sensor and the batch's time
    span are the leading columns of ``ix_telemetry_session_sensor_ts``; ``batch_id`` is
    checked on the few index entries in that span."""
    return (
        select(T.ts, T.raw_value, T.value, T.late)
        .where(
            T.capture_session_id == h.capture_session_id,
            T.sensor_id == h.sensor_id,
            T.ts.between(h.first_ts, h.last_ts),
            T.batch_id == h.batch_id,
        )
        .order_by(T.id)
    )


class SqliteStore(TelemetryStore):
    def insert_batch(self, fields: dict[str, Any]) -> int | None:
        return cast(int | None, self.conn.execute(_INSERT_BATCH, fields).scalar_one_or_none())

    def write(self, rows: StoredBatch) -> bool:
        # The savepoint on the connection the insert runs on: the session's begin_nested()
        # emits none before the session itself next asks for its connection, so a failed
        # executemany kept the rows before the duplicate (and the batch said it stored none).
        try:
            with self.conn.begin_nested():  # rolled back on the error, which goes on
                self.conn.execute(insert(models.TelemetryReading), rows.rows())
        except IntegrityError as exc:
            if _TAKEN not in str(exc.orig):
                raise
            return False
        return True

    def write_free(self, rows: StoredBatch) -> set[int]:
        written = self.conn.execute(_INSERT_FREE, rows.rows()).scalars()
        return {utctime.micros(ts) for ts in written}

    def add_rollups(self, key: RollupKey, cells: Sequence[Cell]) -> None:
        if not cells:
            return
        shared = {
            "sensor_id": key.sensor_id,
            "capture_session_id": key.capture_session_id,
            "run_id": key.run_id,
        }
        self.conn.execute(
            _UPSERT_ROLLUPS,
            [
                {**shared, "level": lv, "cell": cell, "n": n, "total": s, "lo": lo, "hi": hi}
                for lv, cell, n, s, lo, hi in cells
            ],
        )

    def _merged_page(self, sensors: list[uuid.UUID], conds: list[Any], n: int) -> list[Any]:
        # A compound member takes no ORDER BY or LIMIT here, but SQLite merges the members of
        # an ordered compound as co-routines in index order and stops at the LIMIT.
        merged = union_all(*(select(T.__table__).where(*conds, T.sensor_id == s) for s in sensors))
        ts, rid = merged.selected_columns.ts, merged.selected_columns.id
        return list(self.conn.execute(merged.order_by(ts, rid).limit(n)))

    def buckets(self, conds: list[Any], spans: Spans, values: Values | None = None) -> list[Bucket]:
        # No LATERAL: one small range query per bucket, which costs no round trip here.
        v = values.value if values else T.value
        stmt = select(func.sum(v), func.min(v), func.max(v), func.count())
        if values is not None:
            stmt = stmt.select_from(values.source)
        stmt = stmt.where(*conds, T.ts >= _LO, T.ts < _HI)
        out: list[Bucket] = []
        last = spans.count - 1
        for k in range(spans.count):
            lo = at(spans.start + k * spans.span)
            hi = at(spans.last + 1 if k == last else spans.start + (k + 1) * spans.span)
            s, mn, mx, n = self.conn.execute(stmt, {"lo": lo, "hi": hi}).one()
            if n:
                out.append((k, float(s), float(mn), float(mx), int(n)))
        return out

    def batch_rows(self, batches: Sequence[BatchRef]) -> dict[int, list[LiveRow]]:
        out: dict[int, list[LiveRow]] = {}
        for h in batches:
            out[h.batch_id] = [
                (ts.astimezone(UTC).isoformat(), float(raw), float(value), bool(late))
                for ts, raw, value, late in self.conn.execute(batch_rows_query(h))
            ]
        return out
