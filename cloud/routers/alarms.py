"""Alarm rules of a sensor (``/sensors/{sensor_id}/alarm-rules``) and the alarms they raise
(``/runs/{run_id}/alarms``, ``/alarms``, ``/alarms/{id}/ack``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from cloud.container import container
from cloud.deps import DbSession, Editor, Viewer
from cloud.schemas import Page
from cloud.schemas_alarms import (
    AckIn,
    AlarmOut,
    AlarmRuleIn,
    AlarmRuleOut,
    AlarmRulePatch,
    AlarmState,
)
from cloud.services import alarms as service
from cloud.services.alarm_edge import rules_for_edge
from cloud.services.sensors import bearer_token
from common.edge_rules import EdgeRules

router = APIRouter(prefix="/api/v1", tags=["alarms"])


@router.post("/sensors/{sensor_id}/alarm-rules", status_code=status.HTTP_201_CREATED)
def create_rule(
    sensor_id: uuid.UUID, body: AlarmRuleIn, db: DbSession, caller: Editor
) -> AlarmRuleOut:
    """A rule on the sensor's converted values; with ``run_id``, for that run only
    (overriding the sensor's rule of the same kind while readings of that run come in)."""
    return AlarmRuleOut.model_validate(service.create_rule(db, caller, sensor_id, body))


@router.get("/sensors/{sensor_id}/alarm-rules")
def list_rules(
    sensor_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: str | None = None,
) -> Page[AlarmRuleOut]:
    rows, nxt = service.list_rules(db, caller, sensor_id, limit, cursor)
    return Page(items=[AlarmRuleOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get(
    "/sensors/{sensor_id}/edge-rules",
    responses={401: {"description": "missing, unknown, rotated or revoked sensor token"}},
)
def edge_rules(sensor_id: uuid.UUID, request: Request, db: DbSession) -> EdgeRules:
    """The sensor's rules and conversion profile, for its edge (``Authorization: Bearer
    <sensor token>``): the edge evaluates them on what it captures, offline too, and posts
    no alarm (the cloud raises each at ingest)."""
    return rules_for_edge(db, bearer_token(request.headers.get("authorization")), sensor_id)


@router.get("/sensors/{sensor_id}/alarm-rules/{rule_id}")
def get_rule(
    sensor_id: uuid.UUID, rule_id: uuid.UUID, db: DbSession, caller: Viewer
) -> AlarmRuleOut:
    return AlarmRuleOut.model_validate(service.get_rule(db, caller, sensor_id, rule_id))


@router.patch("/sensors/{sensor_id}/alarm-rules/{rule_id}")
def patch_rule(
    sensor_id: uuid.UUID, rule_id: uuid.UUID, body: AlarmRulePatch, db: DbSession, caller: Editor
) -> AlarmRuleOut:
    return AlarmRuleOut.model_validate(service.patch_rule(db, caller, sensor_id, rule_id, body))


@router.delete("/sensors/{sensor_id}/alarm-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(
    request: Request, sensor_id: uuid.UUID, rule_id: uuid.UUID, db: DbSession, caller: Editor
) -> Response:
    """The rule stops; an alarm of it still raised is cleared; its alarms are kept."""
    container(request).announce_alarms(db, service.delete_rule(db, caller, sensor_id, rule_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/runs/{run_id}/alarms")
def list_run_alarms(
    run_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    state: AlarmState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: str | None = None,
) -> Page[AlarmOut]:
    """The run's alarms, newest raised first."""
    rows, nxt = service.list_for_run(db, caller, run_id, state, limit, cursor)
    return Page(items=[AlarmOut.model_validate(a) for a in rows], next_cursor=nxt)


@router.get("/alarms")
def list_alarms(
    db: DbSession,
    caller: Viewer,
    state: AlarmState | None = None,
    sensor_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: str | None = None,
) -> Page[AlarmOut]:
    """The project's alarms, newest raised first; ``state=raised``: those nobody has
    acknowledged that still hold."""
    rows, nxt = service.list_in_project(db, caller, state, sensor_id, limit, cursor)
    return Page(items=[AlarmOut.model_validate(a) for a in rows], next_cursor=nxt)


@router.get("/alarms/{alarm_id}")
def get_alarm(alarm_id: uuid.UUID, db: DbSession, caller: Viewer) -> AlarmOut:
    return AlarmOut.model_validate(service.get(db, caller, alarm_id))


@router.post("/alarms/{alarm_id}/ack")
def acknowledge(
    request: Request, alarm_id: uuid.UUID, body: AckIn, db: DbSession, caller: Editor
) -> AlarmOut:
    """Acknowledge the alarm with a note (the caller is recorded); once per alarm."""
    alarm, messages = service.acknowledge(db, caller, alarm_id, body)
    container(request).announce_alarms(db, messages)
    return AlarmOut.model_validate(alarm)
