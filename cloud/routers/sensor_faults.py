"""A sensor's device faults (``/sensors/{sensor_id}/faults``): sent by its edge with the
sensor's token, read by the project's members (:mod:`cloud.services.sensor_faults`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from cloud.container import container
from cloud.db import models
from cloud.deps import DbSession, SettingsDep, Viewer
from cloud.services import sensor_faults as service
from cloud.services.scope import get_in_project
from cloud.services.sensors import TokenGate, bearer_token, hash_token, token_refused
from common.faults import FaultEpisode, FaultOut, FaultStored

router = APIRouter(prefix="/api/v1", tags=["sensors"])


def _gate(request: Request) -> TokenGate:
    # The telemetry middleware's gate: the same question (is this some sensor's token?).
    return container(request).sensor_gate


async def sensor_token(request: Request) -> str:
    """The sender's sensor token, known before the body is looked at: a sender without one
    is a 401, never a 422 about a body it had no right to send."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise token_refused(token)
    gate, token_hash = _gate(request), hash_token(token)
    if not (gate.remembered(token_hash) or await run_in_threadpool(gate.lookup, token_hash)):
        raise token_refused(token)
    return token


SensorToken = Annotated[str, Depends(sensor_token)]


@router.post(
    "/sensors/{sensor_id}/faults",
    responses={
        401: {"description": "missing, unknown, rotated or revoked sensor token"},
        403: {"description": "the token is another sensor's"},
    },
)
def record_fault(
    sensor_id: uuid.UUID,
    body: FaultEpisode,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    token: SensorToken,
) -> FaultStored:
    """An episode of the sensor's device faults (``Authorization: Bearer <sensor token>``),
    as it stands: consecutive faults of one kind (an open probe), with the time of the first
    and the last and their count. Send it again, under the same ``episode_id``, as it grows:
    the cloud keeps the latest (a repeat changes nothing, ``stored``: ``unchanged``). The
    sensor's ``fault`` alarm rules are evaluated on it; a new episode is a ``sensor.fault``
    event."""
    done = service.record(
        db,
        token,
        sensor_id,
        body,
        datetime.now(UTC),
        timedelta(seconds=settings.future_tolerance_s),
        timedelta(seconds=settings.clock_skew_tolerance_s),
    )
    container(request).announce_alarms(db, done.alarms)
    return done.answer


@router.get("/sensors/{sensor_id}/faults")
def list_faults(
    sensor_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[FaultOut]:
    """The sensor's fault episodes, newest first."""
    get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    rows = service.list_for_sensor(db, caller.project_id, sensor_id, limit)
    return [
        FaultOut(
            episode_id=r.episode_id,
            sensor_id=r.sensor_id,
            run_id=r.run_id,
            capture_session_id=r.capture_session_id,
            kind=r.kind,
            detail=r.detail,
            first_timestamp=r.first_ts,
            last_timestamp=r.last_ts,
            count=r.count,
            late=r.late,
        )
        for r in rows
    ]
