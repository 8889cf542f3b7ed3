"""What an owner deleted and can still restore (the portal's "Deleted" page)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from cloud.deps import DbSession, Owner, SettingsDep
from cloud.schemas import Page
from cloud.schemas_deletion import DeletedOut
from cloud.services import deletion

router = APIRouter(prefix="/api/v1", tags=["deleted"])


@router.get("/deleted")
def list_deleted(db: DbSession, caller: Owner, settings: SettingsDep) -> Page[DeletedOut]:
    """The project's deleted experiments and runs (those deleted on their own; an
    experiment's come back with it), newest first, each with the time it will be purged;
    one page (they are few)."""
    grace = timedelta(seconds=settings.delete_grace_s)
    return Page(items=deletion.list_deleted(db, caller, grace))
