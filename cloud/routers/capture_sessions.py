from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from cloud.deps import DbSession, Editor, SettingsDep, Viewer
from cloud.schemas import (
    CaptureSessionIn,
    CaptureSessionOut,
    CaptureSessionStop,
    ExperimentOut,
    Page,
    ProjectCaptureSessionOut,
    RunOut,
    SessionStatus,
)
from cloud.services import capture_sessions

router = APIRouter(prefix="/api/v1", tags=["capture sessions"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.post("/runs/{run_id}/capture-sessions", status_code=status.HTTP_201_CREATED)
def start_capture_session(
    run_id: uuid.UUID, body: CaptureSessionIn, db: DbSession, caller: Editor
) -> CaptureSessionOut:
    return CaptureSessionOut.model_validate(capture_sessions.start(db, caller, run_id, body))


@router.get("/runs/{run_id}/capture-sessions")
def list_capture_sessions(
    run_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    status: SessionStatus | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[CaptureSessionOut]:
    """The run's capture sessions by ordinal number."""
    rows, nxt = capture_sessions.list_sessions(
        db, caller, run_id, status=status, limit=limit, cursor=cursor
    )
    return Page(items=[CaptureSessionOut.model_validate(s) for s in rows], next_cursor=nxt)


@router.get("/runs/{run_id}/capture-sessions/{session_id}")
def get_capture_session(
    run_id: uuid.UUID, session_id: uuid.UUID, db: DbSession, caller: Viewer
) -> CaptureSessionOut:
    return CaptureSessionOut.model_validate(capture_sessions.get(db, caller, run_id, session_id))


@router.post("/runs/{run_id}/capture-sessions/{session_id}/start")
def begin_capture_session(
    run_id: uuid.UUID, session_id: uuid.UUID, db: DbSession, caller: Editor
) -> CaptureSessionOut:
    """Start a session created as a draft (at most one running session per run)."""
    return CaptureSessionOut.model_validate(capture_sessions.begin(db, caller, run_id, session_id))


@router.post("/runs/{run_id}/capture-sessions/{session_id}/stop")
def stop_capture_session(
    run_id: uuid.UUID,
    session_id: uuid.UUID,
    db: DbSession,
    caller: Editor,
    settings: SettingsDep,
    body: Annotated[CaptureSessionStop | None, Body()] = None,
) -> CaptureSessionOut:
    """End a running session (``succeeded`` unless told otherwise, ``stopped_at`` now unless
    given). Readings timestamped inside its window are still accepted later, marked late."""
    session = capture_sessions.stop(
        db,
        caller,
        run_id,
        session_id,
        body or CaptureSessionStop(),
        timedelta(seconds=settings.future_tolerance_s),
    )
    return CaptureSessionOut.model_validate(session)


@router.get("/capture-sessions")
def list_all_capture_sessions(
    db: DbSession,
    caller: Viewer,
    status: SessionStatus | None = None,
    run_id: uuid.UUID | None = None,
    experiment_id: uuid.UUID | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[ProjectCaptureSessionOut]:
    """Capture sessions across the project's runs, newest first, each with its run and
    experiment."""
    rows, nxt = capture_sessions.list_in_project(
        db,
        caller,
        status=status,
        run_id=run_id,
        experiment_id=experiment_id,
        limit=limit,
        cursor=cursor,
    )
    items = [
        ProjectCaptureSessionOut.model_validate(
            {
                **CaptureSessionOut.model_validate(s).model_dump(),
                "run": RunOut.model_validate(r),
                "experiment": ExperimentOut.model_validate(e),
            }
        )
        for s, r, e in rows
    ]
    return Page(items=items, next_cursor=nxt)
