"""Purging deleted runs and experiments once their grace period is over (the app's periodic
task, :func:`purge_expired`): every row of a run's data goes, in every table that holds
one — readings, summaries, batches and their commit positions, metrics, annotations,
capture sessions, journal events — then the run; an experiment goes with all its runs.

Each run or experiment is purged in its own transaction: a purge interrupted half-way
leaves whole runs, never half of one. What remains is one ``run.purged`` or
``experiment.purged`` journal event naming what went (not pointing at it: the
``run_id``/``experiment_id`` columns are left empty, nothing refers to the purged rows).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.models import TelemetryBatch
from cloud.db.uow import transaction
from cloud.services import alarms, journal

log = logging.getLogger("benchlink.cloud.purge")

R, E = models.Run, models.Experiment


def purge_expired(
    sessions: sessionmaker[Session], grace: timedelta, now: datetime | None = None
) -> int:
    """Purge what was deleted more than ``grace`` ago; the number of runs and experiments
    purged."""
    cutoff = (now or datetime.now(UTC)) - grace
    with transaction(sessions) as db:
        experiments = list(db.scalars(select(E.id).where(E.deleted_at < cutoff)))
        runs = list(
            db.scalars(
                select(R.id).where(R.deleted_at < cutoff, R.deleted_with_experiment.is_(False))
            )
        )
    done = 0
    for experiment_id in experiments:
        with transaction(sessions) as db:
            done += _purge_experiment(db, experiment_id, cutoff)
    for run_id in runs:
        with transaction(sessions) as db:
            done += _purge_run_alone(db, run_id, cutoff)
    return done


def _purge_experiment(db: Session, experiment_id: uuid.UUID, cutoff: datetime) -> int:
    experiment = db.get(E, experiment_id, with_for_update=True)
    # Restored (or purged by another process) since it was listed: nothing to do.
    if experiment is None or experiment.deleted_at is None or experiment.deleted_at >= cutoff:
        return 0
    run_ids = list(db.scalars(select(R.id).where(R.experiment_id == experiment_id)))
    for run_id in run_ids:
        purge_run_rows(db, run_id)
    db.execute(delete(models.Event).where(models.Event.experiment_id == experiment_id))
    db.execute(
        delete(models.ExperimentTag).where(models.ExperimentTag.experiment_id == experiment_id)
    )
    db.execute(delete(E).where(E.id == experiment_id))
    journal.record(
        db,
        "experiment.purged",
        project_id=experiment.project_id,
        actor="system:purge",
        purged_experiment_id=str(experiment_id),
        name=experiment.name,
        runs=len(run_ids),
    )
    log.info("purged experiment %s with %d runs", experiment_id, len(run_ids))
    return 1


def _purge_run_alone(db: Session, run_id: uuid.UUID, cutoff: datetime) -> int:
    run = db.get(R, run_id, with_for_update=True)
    if run is None or run.deleted_at is None or run.deleted_at >= cutoff:
        return 0
    project_id, experiment_id, name = run.project_id, run.experiment_id, run.name
    purge_run_rows(db, run_id)
    journal.record(
        db,
        "run.purged",
        project_id=project_id,
        actor="system:purge",
        experiment_id=experiment_id,
        purged_run_id=str(run_id),
        name=name,
    )
    log.info("purged run %s", run_id)
    return 1


def purge_run_rows(db: Session, run_id: uuid.UUID) -> None:
    """Delete the run and every row that belongs to it, children first (foreign keys)."""
    batches = select(TelemetryBatch.id).where(TelemetryBatch.run_id == run_id)
    alarms.release_run_alarms(db, run_id)
    # Values reprocessed from the run's readings, and jobs over the run alone: before the
    # readings they name.
    readings = select(models.TelemetryReading.id).where(models.TelemetryReading.run_id == run_id)
    db.execute(
        delete(models.ReprocessedValue).where(models.ReprocessedValue.reading_id.in_(readings))
    )
    db.execute(delete(models.ReprocessJob).where(models.ReprocessJob.run_id == run_id))
    db.execute(
        delete(models.TelemetryBatchCommit).where(models.TelemetryBatchCommit.batch_id.in_(batches))
    )
    for model in (
        models.TelemetrySeqRange,
        models.SensorFault,
        models.TelemetryReading,
        models.TelemetryRollup,
        models.TelemetryBatch,
        models.Metric,
        models.Annotation,
        models.Alarm,
        models.Event,
        models.CaptureSession,
    ):
        db.execute(delete(model).where(model.run_id == run_id))
    alarms.purge_run_rules(db, run_id)
    db.execute(delete(R).where(R.id == run_id))
