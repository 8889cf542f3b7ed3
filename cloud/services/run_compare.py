"""``GET /runs/compare``: one sensor's chart series of several runs, each on a time axis that
starts when the run's first capture session started, so runs recorded on different days
overlay. Each series is :func:`cloud.services.telemetry_query.series` as the run's chart
has it (same buckets, peaks kept); only the time axis is added. A :class:`Window` narrows
every run's series to a range of either axis (a zoomed chart asks for its detail)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import CaptureSession, Sensor
from cloud.errors import invalid
from cloud.identity import Principal
from cloud.schemas import normalize_name
from cloud.schemas_search import ComparedPoint, ComparedRun, Comparison
from cloud.services import telemetry_query
from cloud.services.scope import get_in_project


@dataclass(frozen=True)
class Window:
    """[since, until) in time and [t_since, t_until) in seconds since each run's start;
    None is unbounded."""

    since: datetime | None = None
    until: datetime | None = None
    t_since: float | None = None
    t_until: float | None = None

    def bounds(self, origin: datetime | None) -> tuple[datetime | None, datetime | None] | None:
        """The run's time range, or None when it has none: a window on the run-time axis
        of a run that never started (no origin) holds nothing."""
        if origin is None and (self.t_since is not None or self.t_until is not None):
            return None
        since, until = self.since, self.until
        if self.t_since is not None and origin is not None:
            at = origin + timedelta(seconds=self.t_since)
            since = at if since is None else max(since, at)
        if self.t_until is not None and origin is not None:
            at = origin + timedelta(seconds=self.t_until)
            until = at if until is None else min(until, at)
        return since, until


def compare(
    db: Session,
    caller: Principal,
    run_ids: list[uuid.UUID],
    sensor: str,
    max_points: int,
    window: Window | None = None,
) -> Comparison:
    found = db.scalars(
        select(Sensor).where(
            Sensor.project_id == caller.project_id, Sensor.name == normalize_name(sensor)
        )
    ).one_or_none()
    if found is None:
        raise invalid("sensor", f"no sensor named {sensor!r} in this project")
    asked = dict.fromkeys(run_ids)  # each run once, in the order asked
    runs = [get_in_project(db, models.Run, rid, caller.project_id) for rid in asked]
    return Comparison(
        sensor_id=found.id,
        sensor=found.name,
        display_unit=found.display_unit,
        runs=[_one(db, caller, run, found.id, max_points, window or Window()) for run in runs],
    )


def _one(
    db: Session,
    caller: Principal,
    run: models.Run,
    sensor_id: uuid.UUID,
    max_points: int,
    window: Window,
) -> ComparedRun:
    origin = _session_start(db, run.id)
    bounds = window.bounds(origin)
    points: list[telemetry_query.ChartPoint] = []
    total, downsampled = 0, False
    if bounds is not None:
        f = telemetry_query.ReadingFilter(
            caller.project_id, run_id=run.id, sensor_id=sensor_id, since=bounds[0], until=bounds[1]
        )
        points, total, downsampled = telemetry_query.series(db, f, max_points)
    return ComparedRun(
        run_id=run.id,
        name=run.name,
        session_started_at=origin,
        total=total,
        downsampled=downsampled,
        points=[
            ComparedPoint(
                t=(p.timestamp - origin).total_seconds() if origin is not None else None,
                timestamp=p.timestamp,
                value=p.value,
                min=p.min,
                max=p.max,
                count=p.count,
            )
            for p in points
        ],
    )


def _session_start(db: Session, run_id: uuid.UUID) -> datetime | None:
    """When the run's first capture session started (None before any has)."""
    start: datetime | None = db.scalar(
        select(func.min(CaptureSession.started_at)).where(CaptureSession.run_id == run_id)
    )
    return start
