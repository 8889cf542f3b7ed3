"""Owners delete runs and experiments softly: ``deleted_at`` hides them (every read goes
through :func:`cloud.services.scope.get_in_project` or filters on it), ``restore`` brings
them back until the grace period ends, then :func:`purge_expired` (the app's periodic task)
removes them with every row of their data.

A deleted experiment stamps its runs too (``deleted_with_experiment``), so that one column
on ``runs`` says whether a run's readings may be shown: telemetry queries and ingest need
no join to the experiment.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import Conflict
from cloud.identity import Principal
from cloud.schemas_deletion import DeletedOut
from cloud.services import journal
from cloud.services.scope import get_in_project

R, E, CS = models.Run, models.Experiment, models.CaptureSession


def _refuse_capturing(db: Session, run_ids: Sequence[uuid.UUID], what: str) -> None:
    # A running session is an edge sending readings now: deleting under it would refuse
    # them all until a restore. Stop the session first, knowingly.
    running = db.scalars(
        select(CS.ordinal_number).where(CS.run_id.in_(run_ids), CS.status == "running")
    ).first()
    if running is not None:
        raise Conflict(
            f"{what} has a running capture session (#{running}); stop it before deleting"
        )


def _out(kind: str, obj: models.Run | models.Experiment, grace: timedelta) -> DeletedOut:
    assert obj.deleted_at is not None
    experiment_id = obj.experiment_id if isinstance(obj, models.Run) else obj.id
    return DeletedOut.model_validate(
        {
            "kind": kind,
            "id": obj.id,
            "name": obj.name,
            "experiment_id": experiment_id,
            "deleted_at": obj.deleted_at,
            "purge_after": obj.deleted_at + grace,
        }
    )


def _check_grace(obj: models.Run | models.Experiment, grace: timedelta, label: str) -> None:
    assert obj.deleted_at is not None
    if datetime.now(UTC) > obj.deleted_at + grace:
        raise Conflict(f"{label} {obj.id} was deleted more than {grace} ago and is being purged")


def delete_run(db: Session, caller: Principal, run_id: uuid.UUID, grace: timedelta) -> DeletedOut:
    run = get_in_project(db, R, run_id, caller.project_id, lock=True)
    _refuse_capturing(db, [run.id], f"run {run.id}")
    run.deleted_at, run.deleted_with_experiment = datetime.now(UTC), False
    out = _out("run", run, grace)
    journal.record(
        db,
        "run.deleted",
        project_id=run.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id,
        run_id=run.id,
        name=run.name,
        purge_after=out.purge_after.isoformat(),
    )
    return out


def restore_run(db: Session, caller: Principal, run_id: uuid.UUID, grace: timedelta) -> models.Run:
    run = get_in_project(db, R, run_id, caller.project_id, lock=True, deleted=True)
    if run.deleted_with_experiment:
        raise Conflict(
            f"run {run.id} was deleted with its experiment; restore experiment "
            f"{run.experiment_id} instead"
        )
    _check_grace(run, grace, "run")
    run.deleted_at = None
    journal.record(
        db,
        "run.restored",
        project_id=run.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id,
        run_id=run.id,
        name=run.name,
    )
    return run


def delete_experiment(
    db: Session, caller: Principal, experiment_id: uuid.UUID, grace: timedelta
) -> DeletedOut:
    experiment = get_in_project(db, E, experiment_id, caller.project_id, lock=True)
    runs = list(
        db.scalars(
            select(R)
            .where(R.experiment_id == experiment.id, R.deleted_at.is_(None))
            .with_for_update()
        )
    )
    _refuse_capturing(db, [r.id for r in runs], f"experiment {experiment.id}")
    now = datetime.now(UTC)
    experiment.deleted_at = now
    for run in runs:
        run.deleted_at, run.deleted_with_experiment = now, True
    out = _out("experiment", experiment, grace)
    journal.record(
        db,
        "experiment.deleted",
        project_id=experiment.project_id,
        actor=caller.actor,
        experiment_id=experiment.id,
        name=experiment.name,
        runs=len(runs),
        purge_after=out.purge_after.isoformat(),
    )
    return out


def restore_experiment(
    db: Session, caller: Principal, experiment_id: uuid.UUID, grace: timedelta
) -> models.Experiment:
    experiment = get_in_project(db, E, experiment_id, caller.project_id, lock=True, deleted=True)
    _check_grace(experiment, grace, "experiment")
    runs = list(
        db.scalars(
            select(R)
            .where(R.experiment_id == experiment.id, R.deleted_with_experiment.is_(True))
            .with_for_update()
        )
    )
    for run in runs:
        run.deleted_at, run.deleted_with_experiment = None, False
    experiment.deleted_at = None
    journal.record(
        db,
        "experiment.restored",
        project_id=experiment.project_id,
        actor=caller.actor,
        experiment_id=experiment.id,
        name=experiment.name,
        runs=len(runs),
    )
    return experiment


def list_deleted(db: Session, caller: Principal, grace: timedelta) -> list[DeletedOut]:
    """The project's deleted experiments and the runs deleted on their own, newest first."""
    experiments = db.scalars(
        select(E).where(E.project_id == caller.project_id, E.deleted_at.is_not(None))
    )
    runs = db.scalars(
        select(R).where(
            R.project_id == caller.project_id,
            R.deleted_at.is_not(None),
            R.deleted_with_experiment.is_(False),
        )
    )
    out = [_out("experiment", e, grace) for e in experiments] + [
        _out("run", r, grace) for r in runs
    ]
    return sorted(out, key=lambda d: d.deleted_at, reverse=True)
