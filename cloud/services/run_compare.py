"""``GET /runs/compare``: one sensor's chart series of several runs, each on a time axis that
starts when the run's first capture session started, so runs recorded on different days
overlay. Each series is :func:`cloud.services.telemetry_query.series` as the run's chart
has it (same buckets, peaks kept); only the time axis is added."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import invalid
from cloud.identity import Principal
from cloud.schemas import normalize_name
from cloud.schemas_search import ComparedPoint, ComparedRun, Comparison
from cloud.services import telemetry_query
from cloud.services.scope import get_in_project


def compare(
    db: Session, caller: Principal, run_ids: list[uuid.UUID], sensor: str, max_points: int
) -> Comparison:
    S = models.Sensor
    found = db.scalars(
        select(S).where(S.project_id == caller.project_id, S.name == normalize_name(sensor))
    ).one_or_none()
    if found is None:
        raise invalid("sensor", f"no sensor named {sensor!r} in this project")
    asked = dict.fromkeys(run_ids)  # each run once, in the order asked
    runs = [get_in_project(db, models.Run, rid, caller.project_id) for rid in asked]
    return Comparison(
        sensor_id=found.id,
        sensor=found.name,
        display_unit=found.display_unit,
        runs=[_one(db, caller, run, found.id, max_points) for run in runs],
    )


def _one(
    db: Session, caller: Principal, run: models.Run, sensor_id: uuid.UUID, max_points: int
) -> ComparedRun:
    f = telemetry_query.ReadingFilter(caller.project_id, run_id=run.id, sensor_id=sensor_id)
    points, total, downsampled = telemetry_query.series(db, f, max_points)
    origin = _session_start(db, run.id)
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
    C = models.CaptureSession
    start: datetime | None = db.scalar(select(func.min(C.started_at)).where(C.run_id == run_id))
    return start
