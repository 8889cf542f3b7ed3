"""The event journal: every state change is recorded in the same transaction as the change."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.pagination import decode, encode, int64
from cloud.services import webhook_outbox
from cloud.services.scope import get_in_project


def record(
    db: Session,
    kind: str,
    /,
    *,
    project_id: uuid.UUID,
    actor: str | None,
    experiment_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    sensor_id: uuid.UUID | None = None,
    **payload: Any,
) -> None:
    # A Core INSERT now, not an ORM object flushed at the commit: nothing reads the event
    # back in the request, and the unit-of-work flush of this one row was 8% of a small
    # telemetry request's CPU. It still runs in the request's transaction.
    # On the table, not the entity (an ORM-enabled INSERT takes the ORM's bulk path), with
    # the values as parameters: one statement compiled once, 3 -> 0.5 ms here.
    db.execute(
        _INSERT_EVENT,
        {
            "project_id": project_id,
            "experiment_id": experiment_id,
            "run_id": run_id,
            "capture_session_id": capture_session_id,
            "sensor_id": sensor_id,
            "kind": kind,
            "payload": _jsonable(payload),
            "actor": actor,
        },
    )
    if kind in webhook_outbox.KINDS:  # a webhook may want it: owed in this same transaction
        ids = {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "capture_session_id": capture_session_id,
            "sensor_id": sensor_id,
        }
        data = _jsonable({"actor": actor, **ids, **payload})
        webhook_outbox.enqueue(db, kind, project_id, data)


_INSERT_EVENT = insert(cast(Table, models.Event.__table__))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def list_events(
    db: Session,
    project_id: uuid.UUID,
    *,
    experiment_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    kind: str | None = None,
    exclude_kinds: list[str] | None = None,
    after_id: int | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[models.Event], str | None]:
    named = (
        (models.Experiment, experiment_id),
        (models.Run, run_id),
        (models.CaptureSession, capture_session_id),
    )
    for model, ident in named:
        if ident is not None:  # an id of another project is 404, not an empty page
            get_in_project(db, model, ident, project_id)
    q = select(models.Event).where(models.Event.project_id == project_id)
    if experiment_id is not None:
        q = q.where(models.Event.experiment_id == experiment_id)
    if run_id is not None:
        q = q.where(models.Event.run_id == run_id)
    if capture_session_id is not None:
        q = q.where(models.Event.capture_session_id == capture_session_id)
    if kind is not None:
        q = q.where(models.Event.kind == kind)
    if exclude_kinds:
        q = q.where(models.Event.kind.not_in(exclude_kinds))
    if after_id is not None:
        q = q.where(models.Event.id > after_id)
    key = decode(cursor, int64)
    if after_id is not None:
        # Polling forwards ("what is new since id N") reads oldest first.
        q = q.order_by(models.Event.id.asc())
    else:
        if key is not None:
            q = q.where(models.Event.id < key[0])
        q = q.order_by(models.Event.id.desc())
    rows = list(db.scalars(q.limit(limit + 1)))
    next_cursor = encode(rows[limit - 1].id) if len(rows) > limit and after_id is None else None
    return rows[:limit], next_cursor
