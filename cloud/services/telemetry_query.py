"""Telemetry queries: readings by page, a chart series downsampled in the database, export."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import FieldError, InvalidInput
from cloud.pagination import aware_datetime, decode, encode, int64
from cloud.schemas import ChartPoint, ReadingOut

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
