"""Annotations of a run: ``/runs/{run_id}/annotations`` to add and list, ``/annotations/{id}``
to read, change and delete one."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from cloud.deps import DbSession, Editor, Viewer
from cloud.schemas import AnnotationIn, AnnotationOut, AnnotationPatch, Page

# Aliased: `annotations` is taken by the __future__ import.
from cloud.services import annotations as service
from common.wire import UtcDatetime

router = APIRouter(prefix="/api/v1", tags=["annotations"])


@router.post("/runs/{run_id}/annotations", status_code=status.HTTP_201_CREATED)
def create_annotation(
    run_id: uuid.UUID, body: AnnotationIn, db: DbSession, caller: Editor
) -> AnnotationOut:
    """A note on the run over [start, end], or at ``start`` when ``end`` is left out; about
    one sensor with ``sensor_id``. The author is the caller."""
    return AnnotationOut.model_validate(service.create(db, caller, run_id, body))


@router.get("/runs/{run_id}/annotations")
def list_annotations(
    run_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    sensor_id: uuid.UUID | None = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: str | None = None,
) -> Page[AnnotationOut]:
    """By start time. ``sensor_id``: that sensor's and the run's own (about no sensor);
    ``since``/``until``: those that overlap [since, until)."""
    rows, nxt = service.list_for_run(
        db,
        caller,
        run_id,
        sensor_id=sensor_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[AnnotationOut.model_validate(a) for a in rows], next_cursor=nxt)


@router.get("/annotations/{annotation_id}")
def get_annotation(annotation_id: uuid.UUID, db: DbSession, caller: Viewer) -> AnnotationOut:
    return AnnotationOut.model_validate(service.get(db, caller, annotation_id))


@router.patch("/annotations/{annotation_id}")
def patch_annotation(
    annotation_id: uuid.UUID, body: AnnotationPatch, db: DbSession, caller: Editor
) -> AnnotationOut:
    return AnnotationOut.model_validate(service.patch(db, caller, annotation_id, body))


@router.delete("/annotations/{annotation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_annotation(annotation_id: uuid.UUID, db: DbSession, caller: Editor) -> Response:
    service.delete(db, caller, annotation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
