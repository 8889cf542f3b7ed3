from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import CaptureSession, Experiment, Run
from cloud.errors import Conflict, FieldError, NotFound, invalid
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, int32, uid
from cloud.schemas import TERMINAL, CaptureSessionIn, CaptureSessionStop
from cloud.services import journal, runs
from cloud.services.scope import get_in_project


def get(
    db: Session, caller: Principal, run_id: uuid.UUID, session_id: uuid.UUID, *, lock: bool = False
) -> models.CaptureSession:
    get_in_project(db, models.Run, run_id, caller.project_id)
    session = db.get(models.CaptureSession, session_id, with_for_update=lock)
    if session is None or session.run_id != run_id:
        raise NotFound(f"capture session {session_id} not found in run {run_id}")
    return session


def start(
    db: Session, caller: Principal, run_id: uuid.UUID, body: CaptureSessionIn
) -> models.CaptureSession:
    run = get_in_project(db, models.Run, run_id, caller.project_id, lock=True)
    if run.status in TERMINAL:
        raise Conflict(f"run {run.id} is {run.status}; it takes no new capture sessions")
    taken = db.scalars(
        select(models.CaptureSession.id).where(
            models.CaptureSession.run_id == run.id,
            models.CaptureSession.ordinal_number == body.ordinal_number,
        )
    ).first()
    if taken is not None:
        raise Conflict(
            f"ordinal_number {body.ordinal_number} is already used in run {run.id}",
            errors=[FieldError("ordinal_number", "already used in this run")],
        )
    if body.started_at is not None and body.status != "running":
        raise invalid("started_at", "only a session created running has a start time")
    if body.started_at is not None and body.started_at > datetime.now(UTC):
        raise invalid("started_at", "is in the future")
    if body.status == "running":
        _ensure_none_running(db, run)
    session = models.CaptureSession(
        run_id=run.id,
        project_id=run.project_id,
        ordinal_number=body.ordinal_number,
        status="draft",
        notes=body.notes,
        created_by=caller.user_id,
    )
    db.add(session)
    db.flush()
    if body.status == "running":
        _set_running(db, caller, run, session, body.started_at)
    else:
        journal.record(
            db,
            "capture_session.created",
            project_id=run.project_id,
            actor=caller.actor,
            experiment_id=run.experiment_id,
            run_id=run.id,
            capture_session_id=session.id,
            ordinal_number=session.ordinal_number,
            status=session.status,
        )
    return session


def _ensure_none_running(db: Session, run: models.Run) -> None:
    running = db.scalars(
        select(models.CaptureSession.id).where(
            models.CaptureSession.run_id == run.id, models.CaptureSession.status == "running"
        )
    ).first()
    if running is not None:
        raise Conflict(
            f"run {run.id} already has a running capture session ({running}); stop it first",
            errors=[FieldError("status", "another session of this run is running")],
            running_capture_session_id=str(running),
        )


def begin(
    db: Session, caller: Principal, run_id: uuid.UUID, session_id: uuid.UUID
) -> models.CaptureSession:
    """Start a session that was created as a draft."""
    run = get_in_project(db, models.Run, run_id, caller.project_id, lock=True)
    session = get(db, caller, run_id, session_id, lock=True)
    if session.status != "draft":
        raise Conflict(f"capture session {session.id} is {session.status}; only a draft starts")
    if run.status in TERMINAL:
        raise Conflict(f"run {run.id} is {run.status}; it takes no new capture")
    _ensure_none_running(db, run)
    _set_running(db, caller, run, session)
    return session


def _set_running(
    db: Session,
    caller: Principal,
    run: models.Run,
    session: models.CaptureSession,
    started_at: datetime | None = None,
) -> None:
    """The session starts capturing (now, unless it began earlier); a draft run starts too."""
    session.status, session.started_at = "running", started_at or datetime.now(UTC)
    if run.status == "draft":
        runs.change_status(db, caller, run, "running")
    journal.record(
        db,
        "capture_session.started",
        project_id=run.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id,
        run_id=run.id,
        capture_session_id=session.id,
        ordinal_number=session.ordinal_number,
        status="running",
    )


def stop(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID,
    session_id: uuid.UUID,
    body: CaptureSessionStop,
    future_tolerance: timedelta,
) -> models.CaptureSession:
    session = get(db, caller, run_id, session_id, lock=True)
    if session.status != "running":
        raise Conflict(f"capture session {session.id} is {session.status}, not running")
    now = datetime.now(UTC)
    stopped_at = body.stopped_at or now
    if session.started_at is not None and stopped_at < session.started_at:
        raise invalid(
            "stopped_at", f"is before the session started ({session.started_at.isoformat()})"
        )
    if stopped_at > now + future_tolerance:
        raise invalid("stopped_at", "is in the future")
    session.status, session.stopped_at = body.status, stopped_at
    run = db.get(models.Run, run_id)
    journal.record(
        db,
        "capture_session.stopped",
        project_id=session.project_id,
        actor=caller.actor,
        experiment_id=run.experiment_id if run else None,
        run_id=run_id,
        capture_session_id=session.id,
        status=body.status,
        stopped_at=stopped_at,
    )
    return session


# Within one run the ordinal is unique (a constraint), so it alone orders the run's sessions
# stably, in the order the bench numbered them.
RUN_SESSIONS = Keyset(
    "run_capture_sessions",
    (models.CaptureSession.ordinal_number,),
    (int32,),
    lambda s: (s.ordinal_number,),
)

# Project-wide rows are (session, run, experiment) tuples, newest session first.
PROJECT_SESSIONS = Keyset(
    "capture_sessions",
    (models.CaptureSession.created_at, models.CaptureSession.id),
    (aware_datetime, uid),
    lambda row: (row[0].created_at.isoformat(), row[0].id),
    descending=True,
)


def list_sessions(
    db: Session,
    caller: Principal,
    run_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.CaptureSession], str | None]:
    """The run's capture sessions by ordinal number."""
    get_in_project(db, models.Run, run_id, caller.project_id)
    q = select(models.CaptureSession).where(models.CaptureSession.run_id == run_id)
    if status is not None:
        q = q.where(models.CaptureSession.status == status)
    return RUN_SESSIONS.page(db, q, limit, cursor)


def list_in_project(
    db: Session,
    caller: Principal,
    *,
    status: str | None,
    run_id: uuid.UUID | None,
    experiment_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[models.CaptureSession, models.Run, models.Experiment]], str | None]:
    """Capture sessions across runs (the portal's Tests page), newest first. A run or
    experiment of another project is 404, as everywhere, not an empty list."""
    q = (
        select(CaptureSession, Run, Experiment)
        .join(Run, Run.id == CaptureSession.run_id)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(CaptureSession.project_id == caller.project_id, Run.deleted_at.is_(None))
    )
    if status is not None:
        q = q.where(CaptureSession.status == status)
    if run_id is not None:
        get_in_project(db, Run, run_id, caller.project_id)
        q = q.where(CaptureSession.run_id == run_id)
    if experiment_id is not None:
        get_in_project(db, Experiment, experiment_id, caller.project_id)
        q = q.where(Run.experiment_id == experiment_id)
    rows, nxt = PROJECT_SESSIONS.page(db, q, limit, cursor)
    return [(s, r, e) for s, r, e in rows], nxt
