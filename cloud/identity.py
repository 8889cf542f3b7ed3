"""Who is calling: the identity a request carries, as services see it (no FastAPI here;
``cloud.deps`` reads it from the request)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Principal", "Role", "User"]


class Role(IntEnum):
    viewer = 1
    editor = 2
    owner = 3


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    project_id: uuid.UUID
    role: Role

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"


@dataclass(frozen=True)
class User:
    """A caller known only by ``X-User-Id`` (creating or listing projects)."""

    user_id: uuid.UUID
    project_id: uuid.UUID | None
    role: Role | None
