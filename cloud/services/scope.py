"""Loading a resource within the caller's project: anything else is 404, never 403."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import NotFound

M = TypeVar("M", bound=Any)


def get_in_project(
    db: Session, model: type[M], ident: uuid.UUID, project_id: uuid.UUID, *, lock: bool = False
) -> M:
    obj = db.get(model, ident, with_for_update=lock)
    if obj is None or obj.project_id != project_id:
        label = model.__tablename__.rstrip("s").replace("_", " ")
        raise NotFound(f"{label} {ident} not found")
    return obj


def require_project(db: Session, project_id: uuid.UUID) -> models.Project:
    project = db.get(models.Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project
