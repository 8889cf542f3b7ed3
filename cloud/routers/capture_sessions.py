from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status

from cloud.deps import DbSession, Editor, SettingsDep, Viewer
from cloud.schemas import (
    CaptureSessionIn,
    CaptureSessionOut,
    CaptureSessionStop,
    ExperimentOut,
    RunOut,
)
from cloud.services import capture_sessions

router = APIRouter(prefix="/api/v1", tags=["capture sessions"])


@router.post("/runs/{run_id}/capture-sessions", status_code=status.HTTP_201_CREATED)
def start_capture_session(
    run_id: uuid.UUID, body: CaptureSessionIn, db: DbSession, caller: Editor
) -> CaptureSessionOut:
    return CaptureSessionOut.model_validate(capture_sessions.start(db, caller, run_id, body))


@router.get("/runs/{run_id}/capture-sessions")
def list_capture_sessions(
    run_id: uuid.UUID, db: DbSession, caller: Viewer
) -> list[CaptureSessionOut]:
    return [
        CaptureSessionOut.model_validate(s)
        for s in capture_sessions.list_sessions(db, caller, run_id)
    ]


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
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Capture sessions across the project's runs, with their run and experiment."""
    return [
        {
            **CaptureSessionOut.model_validate(s).model_dump(mode="json"),
            "run": RunOut.model_validate(r).model_dump(mode="json"),
            "experiment": ExperimentOut.model_validate(e).model_dump(mode="json"),
        }
        for s, r, e in capture_sessions.list_in_project(db, caller, status, limit)
    ]
