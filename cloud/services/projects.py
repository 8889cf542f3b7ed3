from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import NotFound
from cloud.identity import User
from cloud.pagination import newest_first
from cloud.schemas import ProjectIn
from cloud.services import journal


def create(db: Session, user: User, body: ProjectIn) -> models.Project:
    project = models.Project(
        name=body.name, description=body.description, owner_user_id=user.user_id
    )
    db.add(project)
    db.flush()
    journal.record(
        db, "project.created", project_id=project.id, actor=f"user:{user.user_id}", name=body.name
    )
    return project


def _visible(user: User):  # type: ignore[no-untyped-def]
    # The gateway vouches for X-Project-Id; the caller also sees the projects they own.
    cond = models.Project.owner_user_id == user.user_id
    if user.project_id is not None:
        cond = or_(cond, models.Project.id == user.project_id)
    return cond


def list_projects(
    db: Session, user: User, *, name: str | None, limit: int, cursor: str | None
) -> tuple[Sequence[models.Project], str | None]:
    """The projects the caller sees, newest first (as experiments and runs)."""
    q = select(models.Project).where(_visible(user))
    if name is not None:
        q = q.where(models.Project.name == name)
    return newest_first(db, q, models.Project, limit, cursor)


def get(db: Session, user: User, project_id: uuid.UUID) -> models.Project:
    project = db.scalars(
        select(models.Project).where(models.Project.id == project_id, _visible(user))
    ).first()
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project
