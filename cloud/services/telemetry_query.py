"""Telemetry queries: readings by page, a chart series downsampled in the database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, func, literal_column, or_, select, union_all
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models
from cloud.db.models import Run, Sensor, SensorProfile, TelemetryBatch, TelemetryRollup
from cloud.errors import FieldError, InvalidInput
from cloud.pagination import aware_datetime, decode, encode, int64
from cloud.schemas import ReadingOut
from cloud.services import telemetry_rollup as rollup
from cloud.services import versioned
from cloud.store.telemetry import telemetry_store
from cloud.store.telemetry.base import Bucket, Spans, Values

T = models.TelemetryReading


class ChartPoint(msgspec.Struct):
    """A point of a chart as answered; :class:`cloud.schemas.ChartPoint` documents the same
    shape in the OpenAPI document (a test holds the two together). Built and encoded by
    msgspec: a chart of 2,000 points cost more in pydantic models than in the database."""

    timestamp: datetime
    value: float
    min: float
    max: float
    count: int


class Series(msgspec.Struct):
    """A chart's answer (:class:`cloud.schemas.TelemetrySeries`)."""

    sensor_id: uuid.UUID
    display_unit: str
    points: list[ChartPoint]
    total: int
    downsampled: bool
    #: the version whose values the chart shows where a reading has one (the one asked
    #: for, else the sensor's current version); other readings count with their first value
    profile_version: str
    #: asked with ``live=true``: the live stream's resume point for this history
    live_from: str | None = None


encode_series = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class ReadingFilter:
    project_id: uuid.UUID
    run_id: uuid.UUID | None = None
    sensor_id: uuid.UUID | None = None
    capture_session_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Deleted runs whose readings a sensor-wide query must leave out (:func:`hidden_runs`).
    hidden_runs: tuple[uuid.UUID, ...] = ()
    #: Sensors whose reprocessed values under a version are read instead of their first
    #: values (:mod:`cloud.services.versioned`); empty: first values only.
    versions: versioned.Wanted = ()

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
        if self.hidden_runs:
            conds.append(T.run_id.not_in(self.hidden_runs))
        return conds


def hidden_runs(db: Session, project_id: uuid.UUID) -> tuple[uuid.UUID, ...]:
    """The project's deleted runs (not yet purged). Usually none, and the filter then costs
    nothing; while there are some, a sensor's readings across runs are read without them."""
    return tuple(
        db.scalars(select(Run.id).where(Run.project_id == project_id, Run.deleted_at.is_not(None)))
    )


def _reading_out(r: Any, reprocessed: dict[int, tuple[float, str]]) -> ReadingOut:
    value, version = reprocessed.get(r.id) or (r.value, r.profile_version)
    return ReadingOut(
        id=r.id,
        sensor_id=r.sensor_id,
        run_id=r.run_id,
        capture_session_id=r.capture_session_id,
        timestamp=r.ts,
        raw_value=r.raw_value,
        value=value,
        profile_version=version,
        late=r.late,
        meta=r.meta,
    )


def query(
    db: Session, f: ReadingFilter, limit: int, cursor: str | None
) -> tuple[list[ReadingOut], str | None]:
    conds = f.where()
    store = telemetry_store(db)
    store.plan_by_index()
    key = decode(cursor, aware_datetime, int64)
    if key is not None:
        ts, last = key
        # The cursor's timestamp also as a plain lower bound: the index range starts there,
        # where the OR alone would start the scan at the filter's first reading every page.
        conds += [T.ts >= ts, or_(T.ts > ts, and_(T.ts == ts, T.id > last))]
    rows: list[Any]
    if f.capture_session_id is not None and f.sensor_id is None and f.run_id is None:
        rows = store.session_page(f.capture_session_id, conds, limit + 1)
    else:
        rows = list(db.scalars(select(T).where(*conds).order_by(T.ts, T.id).limit(limit + 1)))
    nxt = encode(rows[limit - 1].ts.isoformat(), rows[limit - 1].id) if len(rows) > limit else None
    rows = rows[:limit]
    # The page's reprocessed values looked up by id after the page is read: the page's
    # plans stay those of the readings alone.
    reprocessed = versioned.page_values(db, f.versions, rows)
    return [_reading_out(r, reprocessed) for r in rows], nxt


def series(db: Session, f: ReadingFilter, max_points: int) -> tuple[list[ChartPoint], int, bool]:
    """Readings for a chart: all of them if few, else min/max/mean per time bucket so that
    peaks survive the downsampling.

    The buckets are a grid (:class:`Grid`): ``m`` cells of one width, aligned on multiples of
    that width since the Unix epoch, the width being the coarsest of 1 us and the summary
    widths (10 ms .. 1 h) that still gives at least ``max_points`` cells between the first
    and the last reading; ``m`` is the fewest cells per bucket that keep the buckets to
    ``max_points``. Only non-empty buckets are answered, each at the middle of the part of
    its span between the first and the last reading. On a summary width the buckets are
    whole cells of :mod:`cloud.services.telemetry_rollup`, so they are added up from the
    summaries instead of the readings; the answer is the same either way (a mean up to the
    rounding of adding in another order)."""
    conds = f.where()
    store = telemetry_store(db)
    # Core statements on the session's connection: the ORM's per-row result machinery was a
    # tenth of the request and there are no entities here.
    conn = store.conn
    # The first and last timestamps (one index descent each) and how many readings, counted
    # only up to max_points + 1 (enough to choose the branch; counting a million costs as
    # much as bucketing them), in one round trip. Each is an ordered LIMIT: the scope's index
    # gives the order, so no plan reads more than max_points + 1 readings.
    store.plan_by_index()
    ordered = select(T.ts).where(*conds)
    head: list[Any] = [
        select(func.count())
        .select_from(ordered.order_by(T.ts).limit(max_points + 1).subquery())
        .scalar_subquery(),
        ordered.order_by(T.ts).limit(1).scalar_subquery(),
        ordered.order_by(T.ts.desc()).limit(1).scalar_subquery(),
    ]
    few, tmin, tmax = conn.execute(select(*head)).one()
    if few == 0:
        return [], 0, False
    value, _ = versioned.value_columns(f.versions)
    if few <= max_points:
        rows = conn.execute(
            select(T.ts, value)
            .select_from(versioned.source(f.versions))
            .where(*conds)
            .order_by(T.ts, T.id)
        ).all()
        return [ChartPoint(t, v, v, v, 1) for t, v in rows], len(rows), False
    grid = Grid.choose(utctime.micros(tmin), utctime.micros(tmax), max_points)
    per_bucket: list[Bucket] | None = None
    # The summaries hold first values: a chart of reprocessed values reads the readings.
    if grid.level is not None and f.sensor_id is not None and not f.versions:
        per_bucket = _buckets_rollup(conn, f, conds, grid)
    if per_bucket is None:
        values = Values(value, versioned.source(f.versions)) if f.versions else None
        per_bucket = store.buckets(conds, grid.spans(), values)
    at = grid.middles([b[0] for b in per_bucket])
    points = [
        ChartPoint(_EPOCH + _US * us, s / n, lo, hi, n)  # no timedelta built per point
        for us, (_, s, lo, hi, n) in zip(at, per_bucket, strict=True)
    ]
    return points, sum(b[4] for b in per_bucket), True


_US = timedelta(microseconds=1)
_EPOCH = utctime.EPOCH
#: Beyond this many batches not summarised at the chart's level, read the readings instead.
MAX_UNROLLED_BATCHES = 100


@dataclass(frozen=True)
class Grid:
    """Chart buckets: bucket k is cells ``[base + k*m, base + (k+1)*m)`` of ``width`` us
    (cell c spans ``[c*width, (c+1)*width)`` us since the Unix epoch); ``first``/``last``
    are the first and last reading in us. ``level`` is the summary level of ``width``
    (None for 1 us)."""

    width: int
    level: int | None
    m: int
    base: int
    first: int
    last: int

    @classmethod
    def choose(cls, first: int, last: int, max_points: int) -> Grid:
        width, level = 1, None
        for lv, w in enumerate(rollup.WIDTHS_US):
            if last // w - first // w + 1 < max_points:
                break
            width, level = w, lv
        cells = last // width - first // width + 1
        m = -(-cells // max_points)  # ceil: at most max_points buckets
        return cls(width=width, level=level, m=m, base=first // width, first=first, last=last)

    @property
    def buckets(self) -> int:
        return (self.last // self.width - self.base) // self.m + 1

    def spans(self) -> Spans:
        return Spans(
            start=self.start(0),
            span=self.m * self.width,
            count=self.buckets,
            last=self.last,
            fine=self.level is None,
        )

    def start(self, k: int) -> int:
        """Where bucket k starts, in us since the epoch."""
        return (self.base + k * self.m) * self.width

    def bucket_of(self, us: int) -> int:
        return (us // self.width - self.base) // self.m

    def middle(self, k: int) -> int:
        """The middle of bucket k's part of [first, last] (so that no point lies outside
        the readings), in us since the epoch."""
        lo = max(self.start(k), self.first)
        hi = min(self.start(k + 1) - 1, self.last)
        return (lo + hi) // 2

    def middles(self, ks: list[int]) -> list[int]:
        """:meth:`middle` of each bucket of ``ks`` (in order). Only bucket 0 (which holds the
        first reading) and the last (which holds the last) can be cut by [first, last]; every
        other bucket is whole, and its middle one sum away."""
        span = self.m * self.width
        at = self.base * self.width + (span - 1) // 2
        out = [at + k * span for k in ks]
        if ks:
            out[0], out[-1] = self.middle(ks[0]), self.middle(ks[-1])
        return out


def _scope(model: Any, f: ReadingFilter) -> list[Any]:
    """``f``'s sensor, session and run on a table that has those columns (batches, summaries);
    the project is the sensor's, checked by the caller."""
    conds = [model.sensor_id == f.sensor_id]
    if f.capture_session_id is not None:
        conds.append(model.capture_session_id == f.capture_session_id)
    if f.run_id is not None:
        conds.append(model.run_id == f.run_id)
    if f.hidden_runs:
        conds.append(model.run_id.not_in(f.hidden_runs))
    return conds


def _buckets_rollup(
    conn: Connection, f: ReadingFilter, conds: list[Any], grid: Grid
) -> list[Bucket] | None:
    """The buckets from the summaries at the grid's level, plus the readings they do not
    hold; None when too many batches are not summarised there (read the readings then).

    Cells wholly inside the filter come from the summaries; so only a cell that ``since``
    or ``until`` cuts (at most the first and the last) is read reading by reading, as are the
    batches not summarised at this level (``rollup_level`` above it)."""
    assert grid.level is not None and f.sensor_id is not None
    w = grid.width
    cut, lo_cell, hi_cell = _cut_cells(f, grid)
    whole: dict[int, list[Any]] = {}
    extra: list[Any] = [
        and_(T.ts >= _EPOCH + _US * (c * w), T.ts < _EPOCH + _US * ((c + 1) * w)) for c in cut
    ]
    if lo_cell < hi_cell:
        a, b = _EPOCH + _US * (lo_cell * w), _EPOCH + _US * (hi_cell * w)
        unrolled = _unrolled(conn, f, grid.level, a, b)
        if len(unrolled) > MAX_UNROLLED_BATCHES:
            return None
        extra += [
            and_(T.batch_id == bid, T.ts >= max(bf, a), T.ts <= bl, T.ts < b)
            for bid, bf, bl in unrolled
        ]
        whole = _whole_cells(conn, f, grid, lo_cell, hi_cell)
    if extra:
        # One SELECT per range, not one with their OR: a plan of the OR reads the filter's
        # whole span (all of since..until) and keeps what falls in the ranges.
        parts = [select(T.ts, T.value).where(*conds, e) for e in extra]
        for ts, v in conn.execute(parts[0] if len(parts) == 1 else union_all(*parts)):
            rollup.add_to(whole, grid.bucket_of(utctime.micros(ts)), 1, v, v, v)
    return [(kk, s, lo, hi, n) for kk, (n, s, lo, hi) in sorted(whole.items())]


def _cut_cells(f: ReadingFilter, grid: Grid) -> tuple[list[int], int, int]:
    """The cells that ``since`` or ``until`` cut (the first, the last), and the whole cells
    between them: ``[lo_cell, hi_cell)``."""
    w = grid.width
    first, last = grid.first // w, grid.last // w  # the cells of the first and last reading
    cut: list[int] = []
    if f.since is not None and utctime.micros(f.since) > first * w:
        cut.append(first)
    if f.until is not None and utctime.micros(f.until) < (last + 1) * w and last not in cut:
        cut.append(last)
    lo_cell = first + 1 if first in cut else first
    hi_cell = last if last in cut else last + 1
    return cut, lo_cell, hi_cell


def _unrolled(
    conn: Connection, f: ReadingFilter, level: int, a: datetime, b: datetime
) -> Sequence[Row[int, datetime, datetime]]:
    """(id, first_ts, last_ts) of the batches in ``[a, b)`` not summarised at ``level``, up
    to one more than :data:`MAX_UNROLLED_BATCHES`."""
    # Literals, and the index's own predicate said again: the planners must see that the
    # partial index (rollup_level > 0) holds every batch asked for.
    return conn.execute(
        select(TelemetryBatch.id, TelemetryBatch.first_ts, TelemetryBatch.last_ts)
        .where(
            *_scope(TelemetryBatch, f),
            TelemetryBatch.rollup_level > literal_column("0"),
            TelemetryBatch.rollup_level > literal_column(str(int(level))),
            TelemetryBatch.last_ts >= a,
            TelemetryBatch.first_ts < b,
        )
        .limit(MAX_UNROLLED_BATCHES + 1)
    ).all()


def _whole_cells(
    conn: Connection, f: ReadingFilter, grid: Grid, lo_cell: int, hi_cell: int
) -> dict[int, list[Any]]:
    """The summaries of the whole cells ``[lo_cell, hi_cell)`` by bucket: [n, sum, min, max]."""
    k = ((TelemetryRollup.cell - grid.base) // grid.m).label("k")
    return {
        int(kk): [int(n), float(s), float(lo), float(hi)]
        for kk, n, s, lo, hi in conn.execute(
            select(
                k,
                func.sum(TelemetryRollup.n),
                func.sum(TelemetryRollup.total),
                func.min(TelemetryRollup.lo),
                func.max(TelemetryRollup.hi),
            )
            .where(
                *_scope(TelemetryRollup, f),
                TelemetryRollup.level == grid.level,
                TelemetryRollup.cell >= lo_cell,
                TelemetryRollup.cell < hi_cell,
            )
            .group_by(k)
        )
    }


def profile_units(
    db: Session, project_id: uuid.UUID, sensor_id: uuid.UUID | None = None
) -> dict[tuple[uuid.UUID, str], tuple[str, str]]:
    """(input unit, display unit) of every profile version of the project's sensors (or of
    one sensor), by (sensor, version)."""
    q = (
        select(
            SensorProfile.sensor_id,
            SensorProfile.version,
            SensorProfile.input_unit,
            SensorProfile.display_unit,
        )
        .join(Sensor, Sensor.id == SensorProfile.sensor_id)
        .where(Sensor.project_id == project_id)
    )
    if sensor_id is not None:
        q = q.where(SensorProfile.sensor_id == sensor_id)
    return {(s, v): (i, d) for s, v, i, d in db.execute(q)}
