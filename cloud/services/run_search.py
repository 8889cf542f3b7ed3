"""Project-wide run search: the terms of :mod:`cloud.services.run_search_terms` as one query.

What each field reads, per run:

- ``param.NAME``: the run's ``params`` JSON through :mod:`cloud.db.jsonsql`, typed (a number
  term matches number params, a text term text params).
- ``metric.NAME.SUMMARY``: a subquery on the run's points of that name, an index range of
  ``ix_metrics_run_name_step``; ``last`` is the point of the highest step (then the last
  logged), as ``GET /runs/{id}/metrics/summary`` says.
- ``telemetry.SENSOR.SUMMARY``: derived from what ingest keeps, with no summary of its own
  (no write on the ingest path, no migration, nothing that could drift from the readings):
  every batch summarised at all is in the coarsest level of ``telemetry_rollups`` (1 h cells;
  a batch is summarised from its floor level up to that one), so the sensor's rows at that
  level, grouped by run, give count, sum, min and max; the batches in no summary (stored
  before migration 0004, ``rollup_level`` NOT_ROLLED) are read reading by reading through the
  partial index of such batches. A year of one sensor is under 9,000 rows at that level.

A run without the param, metric or sensor readings has no value: it matches no term on it
and sorts after every run that has one, in either direction.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Select,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.orm import Session, outerjoin

from cloud import utctime
from cloud.db import models
from cloud.db.jsonsql import JsonArrayHas, JsonNumber, JsonText
from cloud.db.models import Sensor, TelemetryBatch, TelemetryReading, TelemetryRollup
from cloud.db.types import UTCDateTime
from cloud.errors import FieldError, InvalidInput
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, int64, text, uid
from cloud.services.run_search_terms import DEFAULT_SORT, TIMES, Field, Sort, Term
from cloud.services.telemetry_rollup import NOT_ROLLED

R, M = models.Run, models.Metric
COARSEST = NOT_ROLLED - 1

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Search:
    terms: Sequence[Term] = ()
    sort: Sort = DEFAULT_SORT
    experiment_ids: Sequence[uuid.UUID] = ()
    statuses: Sequence[str] = ()
    tags: Sequence[str] = ()


def search(
    db: Session, caller: Principal, s: Search, limit: int, cursor: str | None
) -> tuple[list[models.Run], str | None]:
    """One page of the caller's project's runs that match every term, in ``s.sort`` order."""
    summaries = _Telemetry.resolve(db, caller.project_id, s)
    conds: list[Any] = [R.project_id == caller.project_id, R.deleted_at.is_(None)]
    if s.experiment_ids:
        conds.append(R.experiment_id.in_(s.experiment_ids))
    if s.statuses:
        conds.append(R.status.in_(s.statuses))
    conds += [JsonArrayHas(R.tags, tag) for tag in dict.fromkeys(s.tags)]
    conds += [_compare(summaries, t) for t in s.terms]
    keys, parsers = _sort_keys(summaries, s.sort)
    found = (
        select(
            R.id.label("run_id"),
            R.created_at.label("created_at"),
            *(k.label(f"k{i}") for i, k in enumerate(keys)),
        )
        .select_from(summaries.joined(R))
        .where(*conds)
        .subquery("found")
    )
    sort_cols = [found.c[f"k{i}"] for i in range(len(keys))]
    query: Select[Any] = select(R, *sort_cols).join(found, found.c.run_id == R.id)
    keyset = Keyset(
        "runs-search:" + _spelling(s.sort),
        (*sort_cols, found.c.created_at, found.c.run_id),
        (*parsers, aware_datetime, uid),
        _cursor_key,
        descending=s.sort.descending,
    )
    rows, nxt = keyset.page(db, query, limit, cursor)
    return [r if isinstance(r, models.Run) else r[0] for r in rows], nxt


def _cursor_key(row: Any) -> tuple[Any, ...]:
    if isinstance(row, models.Run):
        return (row.created_at.isoformat(), row.id)
    run, *keys = row
    keys = [k.isoformat() if isinstance(k, datetime) else k for k in keys]
    return (*keys, run.created_at.isoformat(), run.id)


def _spelling(sort: Sort) -> str:
    f = sort.field
    parts = [p for p in (f.kind, f.name, f.summary) if p]
    return ("-" if sort.descending else "") + ".".join(parts)


def _compare(summaries: _Telemetry, term: Term) -> ColumnElement[bool]:
    op = _OPS[term.op]
    f, value = term.field, term.value
    if f.kind == "param":
        typed = JsonNumber if isinstance(value, float) else JsonText
        return op(typed(R.params, f.name), value)  # type: ignore[no-any-return]
    return op(_number(summaries, f), value)  # type: ignore[no-any-return]


def _number(summaries: _Telemetry, f: Field) -> ColumnElement[Any]:
    """The field's value per run (a time, a metric's or a sensor's summary); NULL if none."""
    if f.kind in TIMES:
        return getattr(R, f.kind)  # type: ignore[no-any-return]
    if f.kind == "metric":
        return _metric(f.name, f.summary)
    assert f.kind == "telemetry"
    return summaries.value(f)


def _metric(name: str, summary: str) -> ColumnElement[Any]:
    mine = (M.run_id == R.id, M.name == name)
    if summary == "last":
        return (
            select(M.value)
            .where(*mine)
            .order_by(M.step.desc(), M.id.desc())
            .limit(1)
            .scalar_subquery()
        )
    agg = {
        "min": func.min(M.value),
        "max": func.max(M.value),
        # NULL, not 0, for a run without the metric: it has no summary to compare.
        "count": func.nullif(func.count(M.id), 0),
    }[summary]
    return select(agg).where(*mine).scalar_subquery()


def _sort_keys(
    summaries: _Telemetry, sort: Sort
) -> tuple[list[ColumnElement[Any]], list[Callable[[Any], Any]]]:
    """The columns that order by ``sort`` before (created_at, id), and their cursor parsers.
    A run without a value gets a rank that puts it last in either direction: the columns
    have no NULLs, which keyset comparisons could not step over."""
    f, desc = sort.field, sort.descending
    if f.kind == "created_at":
        return [], []
    if f.kind == "param":
        number, words = JsonNumber(R.params, f.name), JsonText(R.params, f.name)
        ranks = (2, 1, 0) if desc else (0, 1, 2)  # numbers, then text, then none
        rank = case((number.is_not(None), ranks[0]), (words.is_not(None), ranks[1]), else_=ranks[2])
        return (
            [rank, func.coalesce(number, 0.0), func.coalesce(words, "")],
            [int64, _finite, text],
        )
    value = _number(summaries, f)
    rank = case((value.is_(None), 0 if desc else 1), else_=1 if desc else 0)
    if f.kind in TIMES:
        epoch = literal(utctime.EPOCH, UTCDateTime())
        return [rank, func.coalesce(value, epoch)], [int64, aware_datetime]
    return [rank, func.coalesce(value, literal(0.0, Float()))], [int64, _finite]


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return float(value)


@dataclass
class _Telemetry:
    """The sensors the search names, each with its per-run summary table."""

    tables: dict[str, Subquery]

    @classmethod
    def resolve(cls, db: Session, project_id: uuid.UUID, s: Search) -> _Telemetry:
        named = {t.field.name: t.source for t in s.terms if t.field.kind == "telemetry"}
        if s.sort.field.kind == "telemetry":
            named.setdefault(s.sort.field.name, "sort")
        if not named:
            return cls({})
        ids = dict(
            db.execute(
                select(Sensor.name, Sensor.id).where(
                    Sensor.project_id == project_id, Sensor.name.in_(named)
                )
            ).all()
        )
        missing = [
            FieldError(source, f"no sensor named {name!r} in this project")
            for name, source in named.items()
            if name not in ids
        ]
        if missing:
            raise InvalidInput("; ".join(f"{e.field}: {e.reason}" for e in missing), errors=missing)
        return cls({name: _per_run(ids[name], f"t{i}") for i, name in enumerate(named)})

    def joined(self, base: Any) -> Any:
        for table in self.tables.values():
            base = outerjoin(base, table, table.c.run_id == R.id)
        return base

    def value(self, f: Field) -> ColumnElement[Any]:
        t = self.tables[f.name]
        return {
            "min": t.c.lo,
            "max": t.c.hi,
            "mean": t.c.total / t.c.n,
            "count": t.c.n,
        }[f.summary]


def _per_run(sensor_id: uuid.UUID, alias: str) -> Subquery:
    """count (n), sum (total), min (lo) and max (hi) of the sensor's readings per run."""
    rolled = (
        select(
            TelemetryRollup.run_id.label("run_id"),
            func.sum(TelemetryRollup.n).label("n"),
            func.sum(TelemetryRollup.total).label("total"),
            func.min(TelemetryRollup.lo).label("lo"),
            func.max(TelemetryRollup.hi).label("hi"),
        )
        .where(TelemetryRollup.sensor_id == sensor_id, TelemetryRollup.level == COARSEST)
        .group_by(TelemetryRollup.run_id)
    )
    in_batch = and_(
        TelemetryReading.capture_session_id == TelemetryBatch.capture_session_id,
        TelemetryReading.sensor_id == TelemetryBatch.sensor_id,
        TelemetryReading.ts >= TelemetryBatch.first_ts,
        TelemetryReading.ts <= TelemetryBatch.last_ts,
        TelemetryReading.batch_id == TelemetryBatch.id,
    )
    # Literals, and the partial index's own predicate said again, so that the planners see
    # that ix_telemetry_batches_unrolled holds every batch asked for.
    unrolled = (
        select(
            TelemetryReading.run_id,
            func.count(TelemetryReading.id),
            func.sum(TelemetryReading.value),
            func.min(TelemetryReading.value),
            func.max(TelemetryReading.value),
        )
        .select_from(TelemetryBatch)
        .join(TelemetryReading, in_batch)
        .where(
            TelemetryBatch.sensor_id == sensor_id,
            TelemetryBatch.rollup_level > literal_column("0"),
            TelemetryBatch.rollup_level > literal_column(str(COARSEST)),
        )
        .group_by(TelemetryReading.run_id)
    )
    both = union_all(rolled, unrolled).subquery()
    return (
        select(
            both.c.run_id,
            # bigint: PostgreSQL's sum of bigints is numeric, which would come back a Decimal.
            cast(func.sum(both.c.n), BigInteger).label("n"),
            func.sum(both.c.total).label("total"),
            func.min(both.c.lo).label("lo"),
            func.max(both.c.hi).label("hi"),
        )
        .group_by(both.c.run_id)
        .subquery(alias)
    )
