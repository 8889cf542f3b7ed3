"""Bodies of the soft delete: what a DELETE answers and what the owner's list of deleted
things shows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class DeletedOut(BaseModel):
    """A run or an experiment just deleted: restorable with ``POST .../restore`` until
    ``purge_after``, then purged with its data."""

    kind: Literal["run", "experiment"]
    id: uuid.UUID
    name: str | None
    experiment_id: uuid.UUID
    deleted_at: datetime
    purge_after: datetime
