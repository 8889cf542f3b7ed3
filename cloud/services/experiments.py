from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import Experiment
from cloud.errors import Conflict
from cloud.identity import Principal
from cloud.pagination import newest_first
from cloud.schemas import ExperimentIn, ExperimentPatch
from cloud.services import journal
from cloud.services.scope import get_in_project, require_project


def clean_tags(tags: list[str]) -> list[str]:
    """Tags as stored: trimmed, empty ones dropped, duplicates once, each at most 100 long."""
    seen: dict[str, None] = {}
    for given in tags:
        tag = given.strip()
        if tag:
            seen.setdefault(tag[:100], None)
    return list(seen)


def _set_tags(db: Session, experiment: models.Experiment, tags: list[str]) -> None:
    experiment.tags = clean_tags(tags)
    db.flush()
    db.execute(
        delete(models.ExperimentTag).where(models.ExperimentTag.experiment_id == experiment.id)
    )
    db.add_all(models.ExperimentTag(experiment_id=experiment.id, tag=t) for t in experiment.tags)


def create(db: Session, caller: Principal, body: ExperimentIn) -> models.Experiment:
    require_project(db, caller.project_id)
    experiment = models.Experiment(
        project_id=caller.project_id,
        name=body.name,
        description=body.description,
        status="active",
        created_by=caller.user_id,
    )
    db.add(experiment)
    _set_tags(db, experiment, body.tags)
    journal.record(
        db,
        "experiment.created",
        project_id=caller.project_id,
        actor=caller.actor,
        experiment_id=experiment.id,
        name=experiment.name,
        tags=experiment.tags,
    )
    return experiment


def list_experiments(
    db: Session,
    caller: Principal,
    *,
    tags: list[str],
    status: str | None,
    q: str | None,
    include_archived: bool,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[models.Experiment], str | None]:
    query = select(Experiment).where(
        Experiment.project_id == caller.project_id, Experiment.deleted_at.is_(None)
    )
    if status is not None:
        query = query.where(Experiment.status == status)
    elif not include_archived:
        query = query.where(Experiment.status != "archived")
    for tag in tags:
        query = query.where(
            Experiment.id.in_(
                select(models.ExperimentTag.experiment_id).where(models.ExperimentTag.tag == tag)
            )
        )
    if q:
        pattern = f"%{q.strip()}%"
        query = query.where(
            or_(Experiment.name.ilike(pattern), Experiment.description.ilike(pattern))
        )
    return newest_first(db, query, Experiment, limit, cursor)


def patch(
    db: Session, caller: Principal, experiment_id: uuid.UUID, body: ExperimentPatch
) -> models.Experiment:
    experiment = get_in_project(db, models.Experiment, experiment_id, caller.project_id)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        changes.pop("name")
    for key in ("name", "description"):
        if key in changes:
            setattr(experiment, key, changes[key])
    if changes.get("tags") is not None:
        _set_tags(db, experiment, changes["tags"])
    experiment.updated_at = datetime.now(UTC)
    journal.record(
        db,
        "experiment.updated",
        project_id=caller.project_id,
        actor=caller.actor,
        experiment_id=experiment.id,
        changes=changes,
    )
    return experiment


def set_archived(
    db: Session, caller: Principal, experiment_id: uuid.UUID, archived: bool
) -> models.Experiment:
    experiment = get_in_project(db, models.Experiment, experiment_id, caller.project_id, lock=True)
    target = "archived" if archived else "active"
    if experiment.status == target:
        return experiment  # archiving twice is a no-op, not an error
    experiment.status = target
    experiment.archived_at = datetime.now(UTC) if archived else None
    experiment.updated_at = datetime.now(UTC)
    journal.record(
        db,
        "experiment.archived" if archived else "experiment.unarchived",
        project_id=caller.project_id,
        actor=caller.actor,
        experiment_id=experiment.id,
    )
    return experiment


def ensure_open(experiment: models.Experiment) -> None:
    if experiment.status == "archived":
        raise Conflict(
            f"experiment {experiment.id} is archived and accepts no new runs; unarchive it first"
        )
