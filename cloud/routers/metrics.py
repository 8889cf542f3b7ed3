from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse

from cloud.container import container
from cloud.db import models
from cloud.deps import DbSession, Editor, Viewer
from cloud.schemas import MetricsAccepted, MetricSeries, MetricsIn, MetricSummary
from cloud.services import columnar, metrics, metrics_export
from cloud.services.scope import get_in_project

router = APIRouter(prefix="/api/v1/runs/{run_id}/metrics", tags=["metrics"])


@router.post("", status_code=status.HTTP_201_CREATED)
def log_metrics(
    run_id: uuid.UUID, body: MetricsIn, db: DbSession, caller: Editor
) -> MetricsAccepted:
    names = metrics.log(db, caller, run_id, body.metrics)
    return MetricsAccepted(accepted=len(body.metrics), names=names)


@router.get("")
def get_metrics(
    run_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: str | None = None,
    max_points: Annotated[int | None, Query(ge=2, le=20_000)] = None,
) -> MetricSeries:
    """Points in step order (by name, then step). With ``max_points`` each series is
    downsampled in the database, keeping each bucket's min and max and the first and last
    point; pagination then does not apply."""
    if max_points is not None:
        down, dropped = metrics.downsampled(db, caller, run_id, name, max_points)
        return MetricSeries(run_id=run_id, name=name, points=down, downsampled=dropped)
    pts, nxt = metrics.points(db, caller, run_id, name, limit, cursor)
    return MetricSeries(run_id=run_id, name=name, points=pts, next_cursor=nxt)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the points, streamed: CSV, Parquet or an Arrow IPC stream",
            "content": {k.media_type.split(";")[0]: {} for k in columnar.FORMATS.values()},
            "headers": {
                "Benchlink-Rows": {
                    "description": "the points the export holds, counted as it starts",
                    "schema": {"type": "integer"},
                }
            },
        },
        404: {"description": "the run is not in the project"},
        422: {"description": "a format that is not csv, parquet or arrow"},
    },
)
def export_metrics(
    request: Request,
    run_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    format: columnar.ExportFormat = "csv",
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> StreamingResponse:
    """The run's points (or one metric's) in the list's order, streamed in constant memory
    whatever their number, as ``csv``, ``parquet`` or ``arrow``; the Parquet and Arrow
    schema metadata ``benchlink`` holds the run (params, tags) and its experiment."""
    get_in_project(db, models.Run, run_id, caller.project_id)
    state = container(request)
    rows = metrics_export.count_points(db, run_id, name)
    return metrics_export.response(
        state.read_sessionmaker, run_id, name, format, state.settings.export_stall_timeout_s, rows
    )


@router.get("/summary")
def metrics_summary(run_id: uuid.UUID, db: DbSession, caller: Viewer) -> list[MetricSummary]:
    """Every metric name of the run with its count, last, min and max."""
    return metrics.summary(db, caller, run_id)
