from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from cloud.db import models
from cloud.deps import DbSession, Editor, Owner, SettingsDep, Viewer, same_project
from cloud.schemas import ExperimentIn, ExperimentOut, ExperimentPatch, Page
from cloud.schemas_deletion import DeletedOut
from cloud.services import deletion, experiments
from cloud.services.scope import get_in_project

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_experiment(body: ExperimentIn, db: DbSession, caller: Editor) -> ExperimentOut:
    same_project(caller, body.project_id)
    return ExperimentOut.model_validate(experiments.create(db, caller, body))


@router.get("")
def list_experiments(
    db: DbSession,
    caller: Viewer,
    tag: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    status: Literal["active", "archived"] | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    include_archived: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[ExperimentOut]:
    """Filter by tag (repeatable: all must match), status, and text in name or description.
    Archived experiments are hidden unless ``include_archived`` or ``status=archived``."""
    rows, nxt = experiments.list_experiments(
        db,
        caller,
        tags=tag,
        status=status,
        q=q,
        include_archived=include_archived,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[ExperimentOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/{experiment_id}")
def get_experiment(experiment_id: uuid.UUID, db: DbSession, caller: Viewer) -> ExperimentOut:
    return ExperimentOut.model_validate(
        get_in_project(db, models.Experiment, experiment_id, caller.project_id)
    )


@router.patch("/{experiment_id}")
def patch_experiment(
    experiment_id: uuid.UUID, body: ExperimentPatch, db: DbSession, caller: Editor
) -> ExperimentOut:
    return ExperimentOut.model_validate(experiments.patch(db, caller, experiment_id, body))


@router.post("/{experiment_id}/archive")
def archive_experiment(experiment_id: uuid.UUID, db: DbSession, caller: Owner) -> ExperimentOut:
    return ExperimentOut.model_validate(experiments.set_archived(db, caller, experiment_id, True))


@router.post("/{experiment_id}/unarchive")
def unarchive_experiment(experiment_id: uuid.UUID, db: DbSession, caller: Owner) -> ExperimentOut:
    return ExperimentOut.model_validate(experiments.set_archived(db, caller, experiment_id, False))


@router.delete("/{experiment_id}")
def delete_experiment(
    experiment_id: uuid.UUID, db: DbSession, caller: Owner, settings: SettingsDep
) -> DeletedOut:
    """Delete the experiment with all its runs and their data: restorable until
    ``purge_after`` (``BENCHLINK_DELETE_GRACE_S`` later), then purged. 409 while one of its
    runs has a running capture session."""
    grace = timedelta(seconds=settings.delete_grace_s)
    return deletion.delete_experiment(db, caller, experiment_id, grace)


@router.post("/{experiment_id}/restore")
def restore_experiment(
    experiment_id: uuid.UUID, db: DbSession, caller: Owner, settings: SettingsDep
) -> ExperimentOut:
    """Bring a deleted experiment back with the runs deleted with it."""
    grace = timedelta(seconds=settings.delete_grace_s)
    return ExperimentOut.model_validate(
        deletion.restore_experiment(db, caller, experiment_id, grace)
    )
