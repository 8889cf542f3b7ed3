"""Reprocessing: re-deriving a sensor's stored readings under another profile version.

``POST /sensors/{id}/reprocess`` fixes the job's scope (:func:`request`) and answers at
once; the app's runner (:mod:`cloud.services.reprocess_runner`) then goes through the
scope in chunks (:mod:`cloud.services.reprocess_chunks`). Both values are kept: a reading's
first value stays in ``telemetry_readings.value``, each reprocessed one goes to
``reprocessed_values`` under its version, and reads choose (:mod:`cloud.services.versioned`).
Raw values are never changed.

Job states: ``queued`` (accepted) -> ``running`` -> ``succeeded`` | ``failed``; ``queued``
or ``running`` -> ``cancelled`` (``POST /jobs/{id}/cancel``, which takes effect between two
chunks: every chunk is all or nothing).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import Conflict, invalid
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, uid
from cloud.schemas_jobs import JobOut, JobProgress, ReprocessIn
from cloud.services import journal
from cloud.services.scope import get_in_project

J, T, P = models.ReprocessJob, models.TelemetryReading, models.SensorProfile

#: Jobs still to run or running.
PENDING = ("queued", "running")


def request(
    db: Session, caller: Principal, sensor_id: uuid.UUID, body: ReprocessIn
) -> models.ReprocessJob:
    """Queue a job over the sensor's readings in the body's scope, as they are now."""
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    _refuse(db, sensor, body)
    run = get_in_project(db, models.Run, body.run_id, caller.project_id) if body.run_id else None
    max_id, first_ts, last_ts, total = db.execute(
        select(func.max(T.id), func.min(T.ts), func.max(T.ts), func.count()).where(
            *scope_of(sensor.id, body.run_id, body.since, body.until)
        )
    ).one()
    job = models.ReprocessJob(
        id=uuid.uuid4(),
        project_id=caller.project_id,
        sensor_id=sensor.id,
        profile_version=body.profile_version,
        run_id=body.run_id,
        since=body.since,
        until=body.until,
        status="queued",
        max_id=max_id,
        first_ts=first_ts,
        last_ts=last_ts,
        total=total,
        done=0,
        converted=0,
        unchanged=0,
        unconvertible=0,
        from_versions=[],
        created_by=caller.user_id,
        created_at=datetime.now(UTC),
    )
    db.add(job)
    db.flush()
    journal.record(
        db,
        "telemetry.reprocess_started",
        project_id=caller.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id if run is not None else None,
        run_id=body.run_id,
        sensor_id=sensor.id,
        job_id=job.id,
        profile_version=body.profile_version,
        current_profile_version=sensor.profile_version,
        since=body.since,
        until=body.until,
        first_timestamp=first_ts,
        last_timestamp=last_ts,
        total=total,
    )
    return job


def _refuse(db: Session, sensor: models.Sensor, body: ReprocessIn) -> None:
    """422 for a version the sensor does not have or an empty window; 409 while a job over the
    same sensor and version is pending."""
    versions = list(db.scalars(select(P.version).where(P.sensor_id == sensor.id).order_by(P.id)))
    if body.profile_version not in versions:
        raise invalid(
            "profile_version",
            f"sensor {sensor.id} has no profile version {body.profile_version!r}"
            f" (it has {', '.join(versions)})",
        )
    if body.since is not None and body.until is not None and body.since >= body.until:
        raise invalid("until", "must be after since")
    busy = db.scalar(
        select(J.id).where(
            J.sensor_id == sensor.id,
            J.profile_version == body.profile_version,
            J.status.in_(PENDING),
        )
    )
    if busy is not None:
        raise Conflict(
            f"job {busy} is reprocessing this sensor under {body.profile_version} already;"
            " wait for it to end or cancel it"
        )


def scope_of(
    sensor_id: uuid.UUID,
    run_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
) -> list[Any]:
    """The readings a job over these is about (before its scope is fixed)."""
    conds: list[Any] = [T.sensor_id == sensor_id]
    if run_id is not None:
        conds.append(T.run_id == run_id)
    if since is not None:
        conds.append(T.ts >= since)
    if until is not None:
        conds.append(T.ts < until)
    return conds


def get(db: Session, caller: Principal, job_id: uuid.UUID) -> models.ReprocessJob:
    return get_in_project(db, J, job_id, caller.project_id)


_NEWEST = Keyset(
    "jobs", (J.created_at, J.id), (aware_datetime, uid),
    lambda j: (j.created_at.isoformat(), j.id), descending=True,
)  # fmt: skip


def list_for_sensor(
    db: Session,
    caller: Principal,
    sensor_id: uuid.UUID,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.ReprocessJob], str | None]:
    """The sensor's jobs, newest first (whoever started them, from wherever)."""
    get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    query = select(J).where(J.sensor_id == sensor_id)
    if status is not None:
        query = query.where(J.status == status)
    return _NEWEST.page(db, query, limit, cursor)


def cancel(db: Session, caller: Principal, job_id: uuid.UUID) -> models.ReprocessJob:
    """Stop a queued or running job after its current chunk (whose transaction holds the
    job's row: the cancel waits for it, so the answer says how far the job got). A job that
    ended already is answered as it is."""
    job = get_in_project(db, J, job_id, caller.project_id, lock=True)
    db.refresh(job)  # as the chunk that held the lock left it
    if job.status not in PENDING:
        return job
    job.status = "cancelled"
    job.cancelled_by = caller.user_id
    job.finished_at = datetime.now(UTC)
    db.flush()
    record_finished(db, job, caller.actor)
    return job


def record_finished(db: Session, job: models.ReprocessJob, actor: str) -> None:
    """``telemetry.reprocess_finished``, in the transaction that ended the job."""
    run = db.get(models.Run, job.run_id) if job.run_id is not None else None
    journal.record(
        db,
        "telemetry.reprocess_finished",
        project_id=job.project_id,
        actor=actor,
        experiment_id=run.experiment_id if run is not None else None,
        run_id=job.run_id,
        sensor_id=job.sensor_id,
        job_id=job.id,
        status=job.status,
        profile_version=job.profile_version,
        from_versions=list(job.from_versions or []),
        since=job.since,
        until=job.until,
        first_timestamp=job.first_ts,
        last_timestamp=job.last_ts,
        reached=job.cursor_ts,
        total=job.total,
        done=job.done,
        converted=job.converted,
        unchanged=job.unchanged,
        unconvertible=job.unconvertible,
        error=job.error,
        requested_by=str(job.created_by) if job.created_by else None,
    )


def to_out(job: models.ReprocessJob) -> JobOut:
    return JobOut(
        id=job.id,
        status=job.status,
        project_id=job.project_id,
        sensor_id=job.sensor_id,
        profile_version=job.profile_version,
        run_id=job.run_id,
        since=job.since,
        until=job.until,
        progress=JobProgress(done=job.done, total=job.total),
        converted=job.converted,
        unchanged=job.unchanged,
        unconvertible=job.unconvertible,
        from_versions=list(job.from_versions or []),
        cursor=job.cursor_ts,
        error=job.error,
        created_by=job.created_by,
        cancelled_by=job.cancelled_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
