"""``GET .../completeness``: every reading captured at the edge accounted for (see
:mod:`cloud.services.completeness`). Readable by anyone who can read the session or run."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from cloud.container import container
from cloud.deps import DbSession, Viewer
from cloud.schemas_completeness import RunCompleteness, SessionCompleteness
from cloud.services import completeness

router = APIRouter(prefix="/api/v1", tags=["completeness"])


def _pending(request: Request) -> dict[uuid.UUID, object]:
    """Heartbeats this process took and has not stored yet (read your writes)."""
    return dict(container(request).heartbeats.pending)


@router.get("/capture-sessions/{session_id}/completeness")
def session_completeness(
    session_id: uuid.UUID,
    request: Request,
    db: DbSession,
    caller: Viewer,
    sensor_id: uuid.UUID | None = None,
) -> SessionCompleteness:
    """How many of the session's readings captured at the edge arrived, are waiting at the
    edge, were dead-lettered there (by reason), and how many are unaccounted for, with the
    gaps as edge sequence number ranges. ``sensor_id``: that sensor only."""
    return completeness.for_session(
        db, caller, session_id, sensor_id=sensor_id, pending=_pending(request)
    )


@router.get("/runs/{run_id}/completeness")
def run_completeness(
    run_id: uuid.UUID,
    request: Request,
    db: DbSession,
    caller: Viewer,
    sensor_id: uuid.UUID | None = None,
) -> RunCompleteness:
    """The completeness of each of the run's capture sessions, and their sums."""
    return completeness.for_run(db, caller, run_id, sensor_id=sensor_id, pending=_pending(request))
