from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from cloud.db import models
from cloud.deps import DbSession, Editor, Owner, Viewer, same_project
from cloud.middleware import SECRET_FIELDS_KEY
from cloud.schemas import (
    Page,
    ProfileChange,
    ProfileChangeOut,
    ProfileOut,
    SensorIn,
    SensorOut,
    SensorPatch,
    SensorWithToken,
)
from cloud.services import sensors
from cloud.services.scope import get_in_project

router = APIRouter(prefix="/api/v1/sensors", tags=["sensors"])

Limit = Annotated[int, Query(ge=1, le=500)]


def secret_response(request: Request, response: Response) -> None:
    """The answer carries a token: never cached, never kept by the idempotency store."""
    response.headers["Cache-Control"] = "no-store"
    request.scope[SECRET_FIELDS_KEY] = ("token",)


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(secret_response)])
def register_sensor(body: SensorIn, db: DbSession, caller: Editor) -> SensorWithToken:
    """Register a sensor. The token is in this response only; the server keeps its hash."""
    same_project(caller, body.project_id)
    sensor, token = sensors.register(db, caller, body)
    return SensorWithToken(sensor=sensors.to_out(db, sensor), token=token)


@router.get("")
def list_sensors(
    db: DbSession,
    caller: Viewer,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    type: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    token_status: Literal["active", "revoked"] | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[SensorOut]:
    """The project's sensors, newest first. ``name`` and ``type`` match exactly."""
    rows, nxt = sensors.list_sensors(
        db,
        caller,
        name=name,
        sensor_type=type,
        token_status=token_status,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=sensors.to_outs(db, rows), next_cursor=nxt)


@router.get("/{sensor_id}")
def get_sensor(sensor_id: uuid.UUID, db: DbSession, caller: Viewer) -> SensorOut:
    return sensors.to_out(db, get_in_project(db, models.Sensor, sensor_id, caller.project_id))


@router.patch("/{sensor_id}")
def patch_sensor(
    sensor_id: uuid.UUID, body: SensorPatch, db: DbSession, caller: Editor
) -> SensorOut:
    """Change a sensor. A new ``input_unit`` or ``display_unit`` makes a new profile version
    (named ``profile_version``, else the next one: v1 -> v2) with the same conversion,
    effective from ``effective_from`` (default: now) as with ``PUT .../conversion-profile``."""
    return sensors.to_out(db, sensors.patch(db, caller, sensor_id, body))


@router.post("/{sensor_id}/rotate-token", dependencies=[Depends(secret_response)])
def rotate_token(sensor_id: uuid.UUID, db: DbSession, caller: Owner) -> SensorWithToken:
    """Issue a new token; the old one stops working at once."""
    sensor, token = sensors.rotate(db, caller, sensor_id)
    return SensorWithToken(sensor=sensors.to_out(db, sensor), token=token)


@router.post("/{sensor_id}/revoke-token")
def revoke_token(sensor_id: uuid.UUID, db: DbSession, caller: Owner) -> SensorOut:
    return sensors.to_out(db, sensors.revoke(db, caller, sensor_id))


@router.put("/{sensor_id}/conversion-profile")
def set_conversion_profile(
    sensor_id: uuid.UUID, body: ProfileChange, db: DbSession, caller: Editor
) -> ProfileChangeOut:
    """Add a new profile version and make it current; earlier versions are kept. Its units
    are the sensor's unless ``input_unit`` / ``display_unit`` say others.

    It converts the readings stamped from ``effective_from`` (default: now; not before the
    current version's, not in the future) as they arrive, late ones too. Readings already
    stored keep their values: ``readings_to_reprocess`` counts those stamped from then on."""
    sensor, stored = sensors.set_profile(db, caller, sensor_id, body)
    out = sensors.to_out(db, sensor)
    return ProfileChangeOut(**out.model_dump(), readings_to_reprocess=stored)


@router.get("/{sensor_id}/conversion-profiles")
def list_conversion_profiles(
    sensor_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    kind: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[ProfileOut]:
    """The sensor's profile versions in the order they were set (the current one last), each
    with ``effective_from``: it converts the readings stamped from then to the next one's."""
    rows, nxt = sensors.profiles(db, caller, sensor_id, kind=kind, limit=limit, cursor=cursor)
    return Page(items=[ProfileOut.model_validate(p) for p in rows], next_cursor=nxt)
