from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from cloud.db import models
from cloud.deps import DbSession, Editor, Owner, Viewer, same_project
from cloud.schemas import ExperimentIn, ExperimentOut, ExperimentPatch, Page
from cloud.services import experiments
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
    q: Annotated[str | None, Query(max_length=200)] = None,
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
