"""Who the caller is, as the API sees it: the portal shows each role its own actions."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from cloud.deps import Viewer

router = APIRouter(prefix="/api/v1", tags=["projects"])


class CallerOut(BaseModel):
    user_id: uuid.UUID
    project_id: uuid.UUID
    role: Literal["viewer", "editor", "owner"]


@router.get("/me")
def me(caller: Viewer) -> CallerOut:
    """The caller's user, project and role (from the gateway's headers). Behind a gateway
    this is how a page learns which actions to offer; the API checks every one anyway."""
    return CallerOut(user_id=caller.user_id, project_id=caller.project_id, role=caller.role.name)
