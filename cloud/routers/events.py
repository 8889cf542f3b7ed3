from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from cloud.db import models
from cloud.deps import DbSession, Viewer
from cloud.schemas import EventOut, Page
from cloud.services import journal

router = APIRouter(prefix="/api/v1", tags=["events"])

Limit = Annotated[int, Query(ge=1, le=1000)]
AfterId = Annotated[int | None, Query(ge=0, le=2**63 - 1)]
#: Kinds left out (repeatable): a page of what is not routine, e.g. a run's journal without
#: its ``telemetry.ingested`` and ``metrics.logged``.
ExcludeKind = Annotated[list[str] | None, Query(max_length=20)]


def _page(rows: list[models.Event], nxt: str | None) -> Page[EventOut]:
    return Page(items=[EventOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/events")
def project_events(
    db: DbSession,
    caller: Viewer,
    experiment_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    capture_session_id: uuid.UUID | None = None,
    kind: str | None = None,
    exclude_kind: ExcludeKind = None,
    after_id: AfterId = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[EventOut]:
    """The project's journal, newest first; ``after_id`` reads forwards from an event id."""
    rows, nxt = journal.list_events(
        db,
        caller.project_id,
        experiment_id=experiment_id,
        run_id=run_id,
        capture_session_id=capture_session_id,
        kind=kind,
        exclude_kinds=exclude_kind,
        after_id=after_id,
        limit=limit,
        cursor=cursor,
    )
    return _page(rows, nxt)


@router.get("/runs/{run_id}/events")
def run_events(
    run_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    kind: str | None = None,
    exclude_kind: ExcludeKind = None,
    after_id: AfterId = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[EventOut]:
    return _page(
        *journal.list_events(
            db,
            caller.project_id,
            run_id=run_id,
            kind=kind,
            exclude_kinds=exclude_kind,
            after_id=after_id,
            limit=limit,
            cursor=cursor,
        )
    )


@router.get("/experiments/{experiment_id}/events")
def experiment_events(
    experiment_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    kind: str | None = None,
    exclude_kind: ExcludeKind = None,
    after_id: AfterId = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> Page[EventOut]:
    return _page(
        *journal.list_events(
            db,
            caller.project_id,
            experiment_id=experiment_id,
            kind=kind,
            exclude_kinds=exclude_kind,
            after_id=after_id,
            limit=limit,
            cursor=cursor,
        )
    )
