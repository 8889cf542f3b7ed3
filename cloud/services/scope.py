"""Loading a resource within the caller's project: anything else is 404, never 403.

A deleted run or experiment (soft delete, :mod:`cloud.services.deletion`) is 404 too, and
so is what belongs to a deleted run (its capture sessions, its annotations): until it is
restored it is as if it did not exist.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import NotFound

M = TypeVar("M", bound=Any)


def get_in_project(
    db: Session,
    model: type[M],
    ident: uuid.UUID,
    project_id: uuid.UUID,
    *,
    lock: bool = False,
    deleted: bool = False,
) -> M:
    """The row, 404 unless it is in the project and visible (``deleted``: only if deleted,
    for restoring it)."""
    obj = db.get(model, ident, with_for_update=lock)
    if obj is None or obj.project_id != project_id or _is_deleted(db, obj) != deleted:
        label = model.__tablename__.rstrip("s").replace("_", " ")
        raise NotFound(f"{label} {ident} not found" + (" among deleted ones" if deleted else ""))
    return obj


def _is_deleted(db: Session, obj: Any) -> bool:
    if getattr(obj, "deleted_at", None) is not None:
        return True
    # Sessions and annotations go with their run (a run's deleted_at also covers a deleted
    # experiment's runs).
    if isinstance(obj, models.CaptureSession | models.Annotation):
        run = db.get(models.Run, obj.run_id)
        return run is None or run.deleted_at is not None
    return False


def require_project(db: Session, project_id: uuid.UUID) -> models.Project:
    project = db.get(models.Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project
