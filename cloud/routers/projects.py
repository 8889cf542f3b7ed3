from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from cloud.deps import CurrentUser, DbSession
from cloud.schemas import Page, ProjectIn, ProjectOut
from cloud.services import projects

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectIn, db: DbSession, user: CurrentUser) -> ProjectOut:
    return ProjectOut.model_validate(projects.create(db, user, body))


@router.get("")
def list_projects(
    db: DbSession,
    user: CurrentUser,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[ProjectOut]:
    """The projects the caller owns or acts in (``X-Project-Id``), newest first;
    ``name`` matches exactly."""
    rows, nxt = projects.list_projects(db, user, name=name, limit=limit, cursor=cursor)
    return Page(items=[ProjectOut.model_validate(p) for p in rows], next_cursor=nxt)


@router.get("/{project_id}")
def get_project(project_id: uuid.UUID, db: DbSession, user: CurrentUser) -> ProjectOut:
    return ProjectOut.model_validate(projects.get(db, user, project_id))
