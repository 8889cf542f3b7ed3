"""Telemetry queries: readings by page, a chart series downsampled in the database, export."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
from sqlalchemy import (
    BigInteger,
    Interval,
    and_,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models
from cloud.errors import FieldError, InvalidInput
from cloud.pagination import aware_datetime, decode, encode, int64
from cloud.schemas import ReadingOut
from cloud.services import telemetry_rollup as rollup

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
    R = models.Run
    return tuple(
        db.scalars(select(R.id).where(R.project_id == project_id, R.deleted_at.is_not(None)))
    )


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
    conds = f.where()
    conn = db.connection()
    _plan_by_index(conn)
    key = decode(cursor, aware_datetime, int64)
    if key is not None:
        ts, last = key
        # The cursor's timestamp also as a plain lower bound: the index range starts there,
        # where the OR alone would start the scan at the filter's first reading every page.
        conds += [T.ts >= ts, or_(T.ts > ts, and_(T.ts == ts, T.id > last))]
    rows: list[Any]
    if f.capture_session_id is not None and f.sensor_id is None and f.run_id is None:
        rows = _session_page(conn, f.capture_session_id, conds, limit + 1)
    else:
        rows = list(db.scalars(select(T).where(*conds).order_by(T.ts, T.id).limit(limit + 1)))
    nxt = encode(rows[limit - 1].ts.isoformat(), rows[limit - 1].id) if len(rows) > limit else None
    return [_reading_out(r) for r in rows[:limit]], nxt


def _session_page(conn: Connection, session_id: uuid.UUID, conds: list[Any], n: int) -> list[Any]:
    """The first ``n`` readings of ``conds`` (a capture session's, no sensor or run) in
    (ts, id) order, merged from each of the session's sensors.

    No index gives a session's readings in time order across sensors (one more would slow
    every ingest), but ix_telemetry_session_sensor_ts gives each sensor's: each sensor
    gives its first ``n`` in order and the database merges them, so a page reads at most
    ``n`` readings per sensor however long the session."""
    sensors = _session_sensors(conn, session_id)
    if not sensors:
        return []
    if len(sensors) == 1:  # a compound of one member is no compound to PostgreSQL
        one = select(T.__table__).where(*conds, T.sensor_id == sensors[0])
        return list(conn.execute(one.order_by(T.ts, T.id).limit(n)))
    pg = conn.dialect.name == "postgresql"
    arms = []
    for s in sensors:
        arm = select(T.__table__).where(*conds, T.sensor_id == s)
        # PostgreSQL takes a member's own ORDER BY and LIMIT (in parentheses), which bounds
        # each arm whatever the plan; SQLite takes neither, but merges the members of an
        # ordered compound as co-routines in index order and stops at its LIMIT.
        arms.append(arm.order_by(T.ts, T.id).limit(n) if pg else arm)
    merged = union_all(*arms)
    ts, rid = merged.selected_columns.ts, merged.selected_columns.id
    return list(conn.execute(merged.order_by(ts, rid).limit(n)))


def _session_sensors(conn: Connection, session_id: uuid.UUID) -> list[uuid.UUID]:
    """The sensors with readings in a capture session, one descent of
    ix_telemetry_session_sensor_ts each (a skip scan: the next sensor after the last
    found), instead of reading the session's readings for a DISTINCT."""
    first = select(T.sensor_id).where(T.capture_session_id == session_id)
    found: list[uuid.UUID] = []
    stmt = first.order_by(T.sensor_id).limit(1)
    while (s := conn.execute(stmt).scalar()) is not None:
        found.append(s)
        stmt = first.where(T.sensor_id > s).order_by(T.sensor_id).limit(1)
    return found


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
    # Core statements on the session's connection: the ORM's per-row result machinery was a
    # tenth of the request and there are no entities here.
    conn = db.connection()
    pg = conn.dialect.name == "postgresql"
    # The first and last timestamps (one index descent each) and how many readings, counted
    # only up to max_points + 1 (enough to choose the branch; counting a million costs as
    # much as bucketing them), in one round trip. Each is an ordered LIMIT: the scope's index
    # gives the order, so no plan reads more than max_points + 1 readings.
    _plan_by_index(conn)
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
    if few <= max_points:
        rows = conn.execute(select(T.ts, T.value).where(*conds).order_by(T.ts, T.id)).all()
        return [ChartPoint(t, v, v, v, 1) for t, v in rows], len(rows), False
    grid = Grid.choose(utctime.micros(tmin), utctime.micros(tmax), max_points)
    per_bucket: list[Bucket] | None = None
    if grid.level is not None and f.sensor_id is not None:
        per_bucket = _buckets_rollup(conn, f, conds, grid)
    if per_bucket is None:
        if not pg:
            per_bucket = _buckets_sqlite(conn, conds, grid)
        elif grid.level is None:
            per_bucket = _buckets_pg_scan(conn, conds, grid)
        else:
            per_bucket = _buckets_pg(conn, conds, grid)
    at = grid.middles([b[0] for b in per_bucket])
    points = [
        ChartPoint(_EPOCH + timedelta(microseconds=us), s / n, lo, hi, n)
        for us, (_, s, lo, hi, n) in zip(at, per_bucket, strict=True)
    ]
    return points, sum(b[4] for b in per_bucket), True


def _plan_by_index(conn: Connection) -> None:
    """On PostgreSQL, plan this transaction's reading queries as ordered index scans.

    Readings arrive faster than statistics follow them: a session that was never analysed
    is estimated at a few dozen rows, and the planner then reads all of its readings through
    a bitmap and sorts them to find the first one, a cost that grows with the data. Every
    query here has an index that gives its order and a LIMIT or a range that bounds it, so
    ruling out bitmap scans and sorts keeps the work to what is returned, whatever the
    statistics say. is_local=true: the settings end with the request's transaction. JIT off:
    the estimated costs of the bucket queries are far above jit_above_cost, and compiling
    them costs more than it saves."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        select(
            func.set_config("jit", "off", True),
            func.set_config("enable_bitmapscan", "off", True),
            func.set_config("enable_sort", "off", True),
        )
    )


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


Bucket = tuple[int, float, float, float, int]  # k, sum, min, max, count (count > 0)


def _buckets_pg(conn: Connection, conds: list[Any], grid: Grid) -> list[Bucket]:
    # One index range scan per bucket (LATERAL), in time order, each aggregated on its own:
    # no per-row bucket arithmetic (date_part() and floor() were a quarter of the time) and no
    # hash of the groups (the planner expected a million of them). With
    # ix_telemetry_session_sensor_ts covering ts, value and project_id (migration 0002) the
    # scans of a session's chart are index-only. Bucket 0 starts at or before the first
    # reading and the last bucket is open-ended, so every reading is counted.
    buckets = grid.buckets
    k = func.generate_series(0, buckets - 1).table_valued(column("k", BigInteger)).render_derived()
    t0 = bindparam("t0", _EPOCH + _US * grid.start(0), type_=T.ts.type)
    one_us = literal_column("interval '1 microsecond'", Interval)
    span = grid.m * grid.width

    def edge(i: Any) -> Any:
        return t0 + (i * span) * one_us

    hi = case(
        (k.c.k == buckets - 1, literal_column("'infinity'::timestamptz")), else_=edge(k.c.k + 1)
    )
    agg = (
        select(
            func.sum(T.value).label("s"),
            func.min(T.value).label("lo"),
            func.max(T.value).label("hi"),
            func.count().label("n"),
        )
        .where(*conds, T.ts >= edge(k.c.k), T.ts < hi)
        .lateral("agg")
    )
    rows = conn.execute(
        select(k.c.k, agg.c.s, agg.c.lo, agg.c.hi, agg.c.n)
        .select_from(k)
        .join(agg, true())
        .where(agg.c.n > 0)
        .order_by(k.c.k)
    ).all()
    return cast(list[Bucket], rows)


def _buckets_pg_scan(conn: Connection, conds: list[Any], grid: Grid) -> list[Bucket]:
    # A grid of 1 us cells spans fewer than max_points cells of 10 ms (20 s for 2000 points),
    # so its readings are few enough for one range scan grouped by date_bin() (integer
    # microseconds, in C): cheaper than a range scan per bucket when the buckets hold a few
    # readings each, as they do when zoomed in. Every reading is at or after bucket 0's start
    # and at or before the last reading, so no bucket is open-ended here.
    start, span = grid.start(0), grid.m * grid.width
    stride = literal_column(f"interval '{span} microseconds'", Interval)
    t0 = bindparam("t0", _EPOCH + _US * start, type_=T.ts.type)
    b = func.date_bin(stride, T.ts, t0).label("b")
    rows = conn.execute(
        select(b, func.sum(T.value), func.min(T.value), func.max(T.value), func.count())
        .where(*conds)
        .group_by(b)
    ).all()
    return sorted(((utctime.micros(at) - start) // span, s, lo, hi, n) for at, s, lo, hi, n in rows)


def _buckets_sqlite(conn: Connection, conds: list[Any], grid: Grid) -> list[Bucket]:
    # SQLite has no LATERAL; it runs in-process, so one small range query per bucket costs
    # no round trip. The bounds are bound through the column's type, exactly as since/until.
    lo_p = bindparam("lo", type_=T.ts.type)
    hi_p = bindparam("hi", type_=T.ts.type)
    stmt = select(func.sum(T.value), func.min(T.value), func.max(T.value), func.count()).where(
        *conds, T.ts >= lo_p, T.ts < hi_p
    )
    out: list[Bucket] = []
    last = grid.buckets - 1
    for k in range(grid.buckets):
        lo = _EPOCH + _US * grid.start(k)
        hi = _EPOCH + _US * (grid.last + 1 if k == last else grid.start(k + 1))
        s, mn, mx, n = conn.execute(stmt, {"lo": lo, "hi": hi}).one()
        if n:
            out.append((k, float(s), float(mn), float(mx), int(n)))
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
    first, last = grid.first // w, grid.last // w  # the cells of the first and last reading
    cut: list[int] = []
    if f.since is not None and utctime.micros(f.since) > first * w:
        cut.append(first)
    if f.until is not None and utctime.micros(f.until) < (last + 1) * w and last not in cut:
        cut.append(last)
    lo_cell = first + 1 if first in cut else first
    hi_cell = last if last in cut else last + 1  # whole cells: [lo_cell, hi_cell)

    whole: dict[int, list[Any]] = {}
    extra: list[Any] = [
        and_(T.ts >= _EPOCH + _US * (c * w), T.ts < _EPOCH + _US * ((c + 1) * w)) for c in cut
    ]
    if lo_cell < hi_cell:
        a, b = _EPOCH + _US * (lo_cell * w), _EPOCH + _US * (hi_cell * w)
        TB = models.TelemetryBatch
        # Literals, and the index's own predicate said again: the planners must see that the
        # partial index (rollup_level > 0) holds every batch asked for.
        unrolled = conn.execute(
            select(TB.id, TB.first_ts, TB.last_ts)
            .where(
                *_scope(TB, f),
                TB.rollup_level > literal_column("0"),
                TB.rollup_level > literal_column(str(int(grid.level))),
                TB.last_ts >= a,
                TB.first_ts < b,
            )
            .limit(MAX_UNROLLED_BATCHES + 1)
        ).all()
        if len(unrolled) > MAX_UNROLLED_BATCHES:
            return None
        extra += [
            and_(T.batch_id == bid, T.ts >= max(bf, a), T.ts <= bl, T.ts < b)
            for bid, bf, bl in unrolled
        ]
        R = models.TelemetryRollup
        k = ((R.cell - grid.base) // grid.m).label("k")
        for kk, n, s, lo, hi in conn.execute(
            select(k, func.sum(R.n), func.sum(R.total), func.min(R.lo), func.max(R.hi))
            .where(*_scope(R, f), R.level == grid.level, R.cell >= lo_cell, R.cell < hi_cell)
            .group_by(k)
        ):
            whole[int(kk)] = [int(n), float(s), float(lo), float(hi)]
    if extra:
        # One SELECT per range, not one with their OR: a plan of the OR reads the filter's
        # whole span (all of since..until) and keeps what falls in the ranges.
        parts = [select(T.ts, T.value).where(*conds, e) for e in extra]
        for ts, v in conn.execute(parts[0] if len(parts) == 1 else union_all(*parts)):
            rollup.add_to(whole, grid.bucket_of(utctime.micros(ts)), 1, v, v, v)
    return [(kk, s, lo, hi, n) for kk, (n, s, lo, hi) in sorted(whole.items())]


def profile_units(
    db: Session, project_id: uuid.UUID, sensor_id: uuid.UUID | None = None
) -> dict[tuple[uuid.UUID, str], tuple[str, str]]:
    """(input unit, display unit) of every profile version of the project's sensors (or of
    one sensor), by (sensor, version)."""
    P, S = models.SensorProfile, models.Sensor
    q = (
        select(P.sensor_id, P.version, P.input_unit, P.display_unit)
        .join(S, S.id == P.sensor_id)
        .where(S.project_id == project_id)
    )
    if sensor_id is not None:
        q = q.where(P.sensor_id == sensor_id)
    return {(s, v): (i, d) for s, v, i, d in db.execute(q)}
