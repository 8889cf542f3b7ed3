"""Annotations: notes on a run over a time range or at an instant, kept with the record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import invalid
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, uid
from cloud.schemas import AnnotationIn, AnnotationPatch
from cloud.services import journal
from cloud.services.experiments import clean_tags
from cloud.services.scope import get_in_project

A = models.Annotation

#: Annotations of a run in time order; ties by id so that pages never skip or repeat one.
_BY_START = Keyset(
    "annotations",
    (A.start, A.id),
    (aware_datetime, uid),
    lambda a: (a.start.isoformat(), a.id),
)


def _check(db: Session, caller: Principal, a: models.Annotation) -> None:
    """What a whole annotation must satisfy, after a create or a change."""
    if a.end is not None and a.end < a.start:
        raise invalid(
            "end", f"is before start ({a.start.isoformat()}); an annotation ends after it starts"
        )
    if a.sensor_id is not None:
        sensor = db.get(models.Sensor, a.sensor_id)
        if sensor is None or sensor.project_id != caller.project_id:
            raise invalid("sensor_id", f"no sensor {a.sensor_id} in this project")


def create(
    db: Session, caller: Principal, run_id: uuid.UUID, body: AnnotationIn
) -> models.Annotation:
    run = get_in_project(db, models.Run, run_id, caller.project_id)
    annotation = models.Annotation(
        id=uuid.uuid4(),
        project_id=caller.project_id,
        run_id=run.id,
        sensor_id=body.sensor_id,
        start=body.start,
        end=body.end,
        text=body.text,
        tags=clean_tags(body.tags),
        created_by=caller.user_id,
    )
    _check(db, caller, annotation)
    db.add(annotation)
    db.flush()
    _journal(db, caller, "annotation.created", annotation, text=annotation.text)
    return annotation


def list_for_run(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID,
    *,
    sensor_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.Annotation], str | None]:
    """A run's annotations by start time; with ``sensor_id``, that sensor's and the run's
    own (those about no sensor); with ``since``/``until``, those that overlap [since, until)."""
    get_in_project(db, models.Run, run_id, caller.project_id)
    query = select(A).where(A.run_id == run_id)
    if sensor_id is not None:
        query = query.where(or_(A.sensor_id == sensor_id, A.sensor_id.is_(None)))
    if until is not None:
        query = query.where(A.start < until)
    if since is not None:
        query = query.where(or_(A.end >= since, (A.end.is_(None)) & (A.start >= since)))
    return _BY_START.page(db, query, limit, cursor)


def get(db: Session, caller: Principal, annotation_id: uuid.UUID) -> models.Annotation:
    return get_in_project(db, models.Annotation, annotation_id, caller.project_id)


def patch(
    db: Session, caller: Principal, annotation_id: uuid.UUID, body: AnnotationPatch
) -> models.Annotation:
    annotation = get_in_project(db, A, annotation_id, caller.project_id, lock=True)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    for key in ("start", "text"):  # required fields: null means "leave as it is"
        if key in changes and changes[key] is None:
            changes.pop(key)
    if changes.get("tags") is not None:
        changes["tags"] = clean_tags(changes["tags"])
    elif "tags" in changes:
        changes.pop("tags")
    for key, value in changes.items():
        setattr(annotation, key, value)
    _check(db, caller, annotation)
    annotation.updated_at = datetime.now(UTC)
    _journal(db, caller, "annotation.updated", annotation, changes=changes)
    return annotation


def delete(db: Session, caller: Principal, annotation_id: uuid.UUID) -> None:
    annotation = get_in_project(db, A, annotation_id, caller.project_id, lock=True)
    _journal(db, caller, "annotation.deleted", annotation, text=annotation.text)
    db.delete(annotation)


def _journal(
    db: Session, caller: Principal, kind: str, a: models.Annotation, **payload: Any
) -> None:
    run = db.get(models.Run, a.run_id)
    journal.record(
        db,
        kind,
        project_id=caller.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id if run is not None else None,
        run_id=a.run_id,
        sensor_id=a.sensor_id,
        annotation_id=a.id,
        start=a.start,
        end=a.end,
        **payload,
    )
