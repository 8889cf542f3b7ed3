from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from cloud.deps import CurrentUser, DbSession
from cloud.schemas import ProjectIn, ProjectOut
from cloud.services import projects

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectIn, db: DbSession, user: CurrentUser) -> ProjectOut:
    return ProjectOut.model_validate(projects.create(db, user, body))


@router.get("")
def list_projects(db: DbSession, user: CurrentUser, name: str | None = None) -> list[ProjectOut]:
    return [ProjectOut.model_validate(p) for p in projects.list_projects(db, user, name)]


@router.get("/{project_id}")
def get_project(project_id: uuid.UUID, db: DbSession, user: CurrentUser) -> ProjectOut:
    return ProjectOut.model_validate(projects.get(db, user, project_id))
