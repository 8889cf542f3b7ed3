from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from cloud.db import models
from cloud.deps import DbSession, Editor, Owner, SettingsDep, Viewer
from cloud.schemas import (
    BatchStatusIn,
    BatchStatusOut,
    Page,
    RunIn,
    RunOut,
    RunPatch,
    RunStatus,
)
from cloud.schemas_deletion import DeletedOut
from cloud.services import deletion, runs
from cloud.services.scope import get_in_project

router = APIRouter(prefix="/api/v1", tags=["runs"])


@router.post("/experiments/{experiment_id}/runs", status_code=status.HTTP_201_CREATED)
def create_run(
    experiment_id: uuid.UUID,
    db: DbSession,
    caller: Editor,
    body: Annotated[RunIn | None, Body()] = None,
) -> RunOut:
    """Start a run (status ``running`` unless ``draft`` is asked). The body may be omitted."""
    return RunOut.model_validate(runs.create(db, caller, experiment_id, body or RunIn()))


@router.get("/experiments/{experiment_id}/runs")
def list_runs(
    experiment_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[RunOut]:
    rows, nxt = runs.list_runs(db, caller, experiment_id, status=status, limit=limit, cursor=cursor)
    return Page(items=[RunOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.post("/runs:batch-status")
def batch_status(body: BatchStatusIn, db: DbSession, caller: Owner) -> BatchStatusOut:
    """Move many runs to one status; each run gets its own result (partial success)."""
    results = runs.batch_status(db, caller, body.run_ids, body.status)
    ok = sum(r.ok for r in results)
    return BatchStatusOut(results=results, succeeded=ok, failed=len(results) - ok)


@router.get("/runs/{run_id}")
def get_run(run_id: uuid.UUID, db: DbSession, caller: Viewer) -> RunOut:
    return RunOut.model_validate(get_in_project(db, models.Run, run_id, caller.project_id))


@router.patch("/runs/{run_id}")
def patch_run(run_id: uuid.UUID, body: RunPatch, db: DbSession, caller: Editor) -> RunOut:
    return RunOut.model_validate(runs.patch(db, caller, run_id, body))


@router.delete("/runs/{run_id}")
def delete_run(
    run_id: uuid.UUID, db: DbSession, caller: Owner, settings: SettingsDep
) -> DeletedOut:
    """Delete the run with its data: it vanishes from lists and reads (404) at once, can be
    restored until ``purge_after`` (``BENCHLINK_DELETE_GRACE_S`` later), then is purged. A
    run with a running capture session is 409: stop it first."""
    return deletion.delete_run(db, caller, run_id, timedelta(seconds=settings.delete_grace_s))


@router.post("/runs/{run_id}/restore")
def restore_run(run_id: uuid.UUID, db: DbSession, caller: Owner, settings: SettingsDep) -> RunOut:
    """Bring a deleted run back, with its data, before it is purged. A run deleted with its
    experiment comes back with the experiment (409 here)."""
    grace = timedelta(seconds=settings.delete_grace_s)
    return RunOut.model_validate(deletion.restore_run(db, caller, run_id, grace))
