from __future__ import annotations

import uuid
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cloud.container import container
from cloud.db import models
from cloud.db.uow import after_commit, one_snapshot, transaction
from cloud.deps import DbSession, SettingsDep, Viewer
from cloud.errors import FieldError, InvalidInput, PayloadTooLarge
from cloud.idempotency import check_key as check_idempotency_key
from cloud.identity import Principal
from cloud.live import positions
from cloud.live.events import position_id
from cloud.schemas import TelemetryPage, TelemetrySeries
from cloud.services import columnar, telemetry, telemetry_export, telemetry_query, versioned
from cloud.services.scope import get_in_project
from cloud.services.sensors import bearer_token
from common.reading import ReadingBatch
from common.wire import BodyRefused, TelemetryAccepted, TelemetryBatch, UtcDatetime, read_batch

router = APIRouter(prefix="/api/v1/telemetry", tags=["telemetry"])

#: Which version's values a read answers (cloud.services.versioned).
ProfileVersion = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="read the values under this profile version where a reading has one"
        " (reprocessed, or first converted by it); default: each sensor's current version",
    ),
]


def _read_batch(raw: bytes) -> ReadingBatch:
    """The body's batch (:func:`common.wire.read_batch`), its refusal as a problem."""
    try:
        return read_batch(raw)
    except BodyRefused as exc:
        error = PayloadTooLarge if exc.status == 413 else InvalidInput
        raise error(exc.detail, errors=[FieldError(exc.field, exc.reason)]) from None
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TelemetryBatch.model_json_schema()}},
        }
    },
    responses={401: {"description": "missing, unknown, rotated or revoked token"}},
)
async def ingest(request: Request, response: Response, settings: SettingsDep) -> TelemetryAccepted:
    """Accept a batch of readings from a sensor (``Authorization: Bearer <sensor token>``).

    A reading must fall within its capture session's time: from ``started_at`` minus the
    clock skew tolerance to now (plus the future tolerance) while the session runs, to
    ``stopped_at`` once it ended (late data from offline capture, marked ``late``). A sensor
    has one reading per timestamp: a copy of a stored reading is dropped and counted in
    ``duplicate``; another value at a stored timestamp is refused. Refused readings are a
    422 naming each one (``readings.N``), and nothing of the batch is stored."""
    # The token was checked (cloud.middleware.TelemetryAuthMiddleware) and the body's size
    # capped (settings.telemetry_max_body_bytes) before the body was read.
    raw = await request.body()
    token = bearer_token(request.headers.get("authorization"))
    key = request.headers.get("idempotency-key")
    check_idempotency_key(key)
    tolerance = timedelta(seconds=settings.future_tolerance_s)
    skew = timedelta(seconds=settings.clock_skew_tolerance_s)
    services = container(request)
    listeners = services.ingest_listeners
    tx_listeners = services.ingest_tx_listeners

    def work() -> telemetry.Ingested:
        # Parsed here, in the worker thread the transaction needs anyway: a large body's parse
        # never holds up the event loop, and a small one costs no extra thread hop.
        batch = _read_batch(raw)
        # The request's one transaction (cloud.db.uow), opened, committed and followed by its
        # after-commit hooks in this one worker-thread call: as a DbSession dependency it
        # took two more thread hops per request, which small live batches feel.
        with transaction(services.sessionmaker) as db:
            done = telemetry.ingest(db, token, batch, key, tolerance, skew)
            # New readings only: copies are not broadcast again. A request split between
            # profile versions publishes one batch per version.
            for published in done.publications():
                for tx_listener in tx_listeners:  # e.g. the live NOTIFY, sent at the commit
                    tx_listener(db, published)
                for listener in listeners:
                    after_commit(db, partial(listener, published))
        return done

    done = await run_in_threadpool(work)
    services.stats.readings_ingested(done)
    if done.replayed:  # this key's batch was stored before: the same answer again
        response.headers["Idempotent-Replayed"] = "true"
    return done.answer


def _filter(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID | None,
    sensor_id: uuid.UUID | None,
    capture_session_id: uuid.UUID | None,
    since: UtcDatetime | None,
    until: UtcDatetime | None,
    profile_version: str | None = None,
) -> telemetry_query.ReadingFilter:
    """The query's filter; a named run, sensor or session outside the project is 404, as
    everywhere else (an empty answer would not say that the id is wrong)."""
    named = (
        (models.Run, run_id),
        (models.Sensor, sensor_id),
        (models.CaptureSession, capture_session_id),
    )
    for model, ident in named:
        if ident is not None:
            get_in_project(db, model, ident, caller.project_id)
    # A named run or session is visible (checked above); a sensor alone spans runs, and
    # the readings of deleted ones are left out.
    across_runs = run_id is None and capture_session_id is None
    return telemetry_query.ReadingFilter(
        project_id=caller.project_id,
        run_id=run_id,
        sensor_id=sensor_id,
        capture_session_id=capture_session_id,
        since=since,
        until=until,
        hidden_runs=telemetry_query.hidden_runs(db, caller.project_id) if across_runs else (),
        versions=versioned.wanted(db, caller.project_id, sensor_id, profile_version),
    )


@router.get("")
def query_telemetry(
    db: DbSession,
    caller: Viewer,
    run_id: uuid.UUID | None = None,
    sensor_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: str | None = None,
    profile_version: ProfileVersion = None,
) -> TelemetryPage:
    """Readings in time order, by run / sensor / capture session and time range [since,
    until); each with its value under ``profile_version`` where it has one (default: its
    sensor's current version), else its first value, and the version its value is from."""
    f = _filter(db, caller, run_id, sensor_id, capture_session_id, since, until, profile_version)
    items, nxt = telemetry_query.query(db, f, limit, cursor)
    return TelemetryPage(items=items, next_cursor=nxt)


@router.get("/series", response_model=TelemetrySeries)
def telemetry_series(
    db: DbSession,
    caller: Viewer,
    sensor_id: uuid.UUID,
    run_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    max_points: Annotated[int, Query(ge=2, le=20_000)] = 2000,
    profile_version: ProfileVersion = None,
    live: bool = False,
) -> Response:
    """One sensor's values for a chart, downsampled server-side to about ``max_points``
    (min, max and mean per time bucket, so peaks are kept), under ``profile_version``
    (default: the sensor's current version) where a reading has a value under it. With
    ``live=true`` also ``live_from``: where the live stream continues this history."""
    live_from = None
    if live:  # the newest position and the points from one snapshot: the history holds
        one_snapshot(db)  # exactly the batches up to it, the stream goes on after it
        live_from = position_id(positions.newest(db))
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    f = _filter(db, caller, run_id, sensor_id, capture_session_id, since, until, profile_version)
    points, total, down = telemetry_query.series(db, f, max_points)
    version, unit = sensor.profile_version, sensor.display_unit
    if profile_version is not None:  # that version's unit (a version may change it)
        version = profile_version
        units = telemetry_query.profile_units(db, caller.project_id, sensor.id)
        unit = units.get((sensor.id, version), ("", unit))[1]
    # Encoded here, not by the response model: validating and dumping 2,000 pydantic points
    # was a third of a zoomed chart's time. The model still documents the answer.
    series = telemetry_query.Series(sensor.id, unit, points, total, down, version, live_from)
    return Response(telemetry_query.encode_series(series), media_type="application/json")


#: The export's download in each format, for the OpenAPI document.
EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the readings, streamed: CSV, Parquet or an Arrow IPC stream",
        "content": {k.media_type.split(";")[0]: {} for k in columnar.FORMATS.values()},
        "headers": {
            telemetry_export.ROWS_HEADER: {
                "description": "the readings the export holds, counted as it starts"
                " (for a progress bar: the body has no Content-Length)",
                "schema": {"type": "integer"},
            }
        },
    },
    404: {"description": "the run, sensor or capture session is not in the project"},
    422: {"description": "no filter, or a format that is not csv, parquet or arrow"},
}


@router.get("/export", response_class=StreamingResponse, responses=EXPORT_RESPONSES)
def export(
    request: Request,
    db: DbSession,
    caller: Viewer,
    format: columnar.ExportFormat = "csv",
    run_id: uuid.UUID | None = None,
    sensor_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    profile_version: ProfileVersion = None,
) -> StreamingResponse:
    """Readings in time order, streamed in constant memory whatever their number: by run,
    capture session or sensor and time range [since, until), as ``csv`` (for spreadsheets:
    text cells a spreadsheet would take for a formula start with a single quote),
    ``parquet`` or ``arrow`` (an Arrow IPC stream). Parquet and Arrow files describe
    themselves: their schema metadata ``benchlink`` holds the experiments, runs (params,
    tags), capture sessions and sensors (units, conversion profiles) of the readings. Each
    reading's value is under ``profile_version`` where it has one (default: its sensor's
    current version), and its ``profile_version`` column says which version it is from."""
    f = _filter(db, caller, run_id, sensor_id, capture_session_id, since, until, profile_version)
    # Each reading's units are those of its own profile version: an export of a run mixes
    # sensors, and a sensor's units can change from one version to the next.
    unit_of = (
        telemetry_query.profile_units(db, caller.project_id, sensor_id) if format == "csv" else {}
    )
    state = container(request)
    rows = telemetry_export.count_readings(db, f)
    return telemetry_export.response(
        state.read_sessionmaker, f, format, unit_of, state.settings.export_stall_timeout_s, rows
    )


@router.get("/export.csv", response_class=StreamingResponse, responses=EXPORT_RESPONSES)
def export_csv(
    request: Request,
    db: DbSession,
    caller: Viewer,
    run_id: uuid.UUID | None = None,
    sensor_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    format: Annotated[Literal["csv"], Query(description="csv only, as the address says")] = "csv",
    profile_version: ProfileVersion = None,
) -> StreamingResponse:
    """``GET /export?format=csv``, at its earlier address."""
    return export(
        request,
        db,
        caller,
        "csv",
        run_id,
        sensor_id,
        capture_session_id,
        since,
        until,
        profile_version,
    )
