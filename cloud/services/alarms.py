"""Alarms: the rules of a sensor (:mod:`cloud.services.alarm_rules`), evaluated at ingest
and by the clock (:mod:`cloud.services.alarm_evaluation`, the pure evaluator in
:mod:`common.alarm_eval`), the alarms they raise and clear
(:mod:`cloud.services.alarm_lifecycle`); here, the alarms listed and acknowledged, and
the names the routers, ingest and the purge use from all of them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import FieldError, InvalidInput
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, uid
from cloud.schemas_alarms import AckIn
from cloud.services.alarm_evaluation import LATE_AFTER_S, STALE_LOCK, evaluate_batch, stale_tick
from cloud.services.alarm_lifecycle import journal_alarm, live_message
from cloud.services.alarm_rules import (
    NEEDS,
    RULE_FIELDS,
    create_rule,
    delete_rule,
    get_rule,
    list_rules,
    patch_rule,
    purge_run_rules,
    release_run_alarms,
    rule_dict,
)
from cloud.services.scope import get_in_project

__all__ = [
    "LATE_AFTER_S",
    "NEEDS",
    "RULE_FIELDS",
    "STALE_LOCK",
    "acknowledge",
    "create_rule",
    "delete_rule",
    "evaluate_batch",
    "get",
    "get_rule",
    "list_for_run",
    "list_in_project",
    "list_rules",
    "live_message",
    "patch_rule",
    "purge_run_rules",
    "release_run_alarms",
    "rule_dict",
    "stale_tick",
]

AL = models.Alarm

_BY_RAISED = Keyset(
    "alarms", (AL.raised_at, AL.id), (aware_datetime, uid),
    lambda a: (a.raised_at.isoformat(), a.id), descending=True,
)  # fmt: skip


def list_for_run(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID,
    state: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.Alarm], str | None]:
    """A run's alarms, newest raised first."""
    get_in_project(db, models.Run, run_id, caller.project_id)
    query = select(AL).where(AL.run_id == run_id)
    if state is not None:
        query = query.where(AL.state == state)
    return _BY_RAISED.page(db, query, limit, cursor)


def list_in_project(
    db: Session,
    caller: Principal,
    state: str | None,
    sensor_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.Alarm], str | None]:
    """The project's alarms, newest raised first; those of deleted runs left out."""
    run = models.Run
    query = (
        select(AL)
        .outerjoin(run, run.id == AL.run_id)
        .where(
            AL.project_id == caller.project_id, or_(AL.run_id.is_(None), run.deleted_at.is_(None))
        )
    )
    if state is not None:
        query = query.where(AL.state == state)
    if sensor_id is not None:
        query = query.where(AL.sensor_id == sensor_id)
    return _BY_RAISED.page(db, query, limit, cursor)


def get(db: Session, caller: Principal, alarm_id: uuid.UUID, lock: bool = False) -> models.Alarm:
    alarm = get_in_project(db, AL, alarm_id, caller.project_id, lock=lock)
    if alarm.run_id is not None:
        get_in_project(db, models.Run, alarm.run_id, caller.project_id)
    return alarm


def acknowledge(
    db: Session, caller: Principal, alarm_id: uuid.UUID, body: AckIn
) -> tuple[models.Alarm, list[dict[str, Any]]]:
    """Raised → acknowledged, or cleared and acknowledged; a second ack is refused."""
    alarm = get(db, caller, alarm_id, lock=True)
    if alarm.acknowledged_at is not None:
        raise InvalidInput(
            f"alarm {alarm.id} was acknowledged already by {alarm.acknowledged_by}",
            errors=[FieldError("alarm_id", "already acknowledged")],
        )
    alarm.acknowledged_at = datetime.now(UTC)
    alarm.acknowledged_by = caller.actor
    alarm.ack_note = body.note.strip() or None
    if alarm.state == "raised":
        alarm.state = "acknowledged"
    journal_alarm(db, "alarm.acknowledged", alarm, caller.actor, note=alarm.ack_note)
    return alarm, [live_message("alarm.acknowledged", alarm)]
