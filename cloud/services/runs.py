from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import Run
from cloud.errors import Conflict, DomainError, FieldError
from cloud.identity import Principal
from cloud.pagination import newest_first
from cloud.schemas import TERMINAL, BatchStatusResult, RunIn, RunPatch
from cloud.services import journal
from cloud.services.experiments import ensure_open
from cloud.services.scope import get_in_project


def create(db: Session, caller: Principal, experiment_id: uuid.UUID, body: RunIn) -> models.Run:
    # Locked: a run is not created in an experiment that is being archived or deleted (the
    # delete stamps the runs it finds; one created alongside would be left visible).
    experiment = get_in_project(db, models.Experiment, experiment_id, caller.project_id, lock=True)
    ensure_open(experiment)
    now = datetime.now(UTC)
    run = models.Run(
        experiment_id=experiment.id,
        project_id=caller.project_id,
        name=body.name,
        params=body.params,
        tags=body.tags,
        status=body.status,
        started_at=now if body.status == "running" else None,
        created_by=caller.user_id,
    )
    db.add(run)
    db.flush()
    journal.record(
        db,
        "run.created",
        project_id=caller.project_id,
        actor=caller.actor,
        experiment_id=experiment.id,
        run_id=run.id,
        status=run.status,
        name=run.name,
    )
    return run


def list_runs(
    db: Session,
    caller: Principal,
    experiment_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[models.Run], str | None]:
    get_in_project(db, models.Experiment, experiment_id, caller.project_id)
    q = select(Run).where(Run.experiment_id == experiment_id, Run.deleted_at.is_(None))
    if status is not None:
        q = q.where(Run.status == status)
    return newest_first(db, q, Run, limit, cursor)


def change_status(db: Session, caller: Principal, run: models.Run, status: str) -> None:
    """Apply the lifecycle: draft -> running -> succeeded | failed | cancelled (final)."""
    if status == run.status:
        return
    if run.status in TERMINAL:
        raise Conflict(
            f"run {run.id} is {run.status}, a final state; it cannot become {status}",
            errors=[FieldError("status", f"{run.status} is final")],
        )
    if run.status == "running" and status == "draft":
        raise Conflict(
            f"run {run.id} is running; it cannot go back to draft",
            errors=[FieldError("status", "running cannot go back to draft")],
        )
    now = datetime.now(UTC)
    previous, run.status = run.status, status
    if status == "running" and run.started_at is None:
        run.started_at = now
    if status in TERMINAL:
        run.ended_at = now
        _stop_running_sessions(db, caller, run, status, now)
    run.updated_at = now
    journal.record(
        db,
        "run.status_changed",
        project_id=run.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id,
        run_id=run.id,
        status=status,
        previous=previous,
    )


def _stop_running_sessions(
    db: Session, caller: Principal, run: models.Run, status: str, now: datetime
) -> None:
    # A run that ended cannot still be capturing: its running session ends with it.
    sessions = db.scalars(
        select(models.CaptureSession)
        .where(models.CaptureSession.run_id == run.id, models.CaptureSession.status == "running")
        .with_for_update()
    )
    for session in sessions:
        session.status, session.stopped_at = status, now
        journal.record(
            db,
            "capture_session.stopped",
            project_id=run.project_id,
            actor=caller.actor,
            experiment_id=run.experiment_id,
            run_id=run.id,
            capture_session_id=session.id,
            status=status,
            reason="run ended",
        )


def patch(db: Session, caller: Principal, run_id: uuid.UUID, body: RunPatch) -> models.Run:
    run = get_in_project(db, models.Run, run_id, caller.project_id, lock=True)
    changes = body.model_dump(exclude_unset=True)
    edited = {k: changes[k] for k in ("name", "params", "tags") if changes.get(k) is not None}
    for key, value in edited.items():
        setattr(run, key, value)
    if edited:
        journal.record(
            db,
            "run.updated",
            project_id=run.project_id,
            actor=caller.actor,
            experiment_id=run.experiment_id,
            run_id=run.id,
            changes=edited,
        )
    if changes.get("status") is not None:
        change_status(db, caller, run, changes["status"])
    run.updated_at = datetime.now(UTC)
    return run


def batch_status(
    db: Session, caller: Principal, run_ids: list[uuid.UUID], status: str
) -> list[BatchStatusResult]:
    results = []
    for run_id in dict.fromkeys(run_ids):
        try:
            with db.begin_nested():  # one run's failure leaves the others applied
                run = get_in_project(db, models.Run, run_id, caller.project_id, lock=True)
                change_status(db, caller, run, status)
                db.flush()
            results.append(BatchStatusResult(run_id=run_id, ok=True, status=run.status))
        except DomainError as exc:
            results.append(
                BatchStatusResult(
                    run_id=run_id,
                    ok=False,
                    error={"status": exc.status, "title": exc.title, "detail": exc.detail},
                )
            )
    return results
