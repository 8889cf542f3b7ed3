"""Bodies and answers of reprocessing and its jobs (:mod:`cloud.routers.jobs`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from cloud.schemas import In, Out
from common.wire import ReadingTimestamp

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ReprocessIn(In):
    """Re-derive the sensor's stored readings (of ``run_id``, stamped in [``since``,
    ``until``)) under ``profile_version``, one of the sensor's versions."""

    profile_version: str = Field(min_length=1, max_length=64)
    run_id: uuid.UUID | None = None
    since: ReadingTimestamp | None = None
    until: ReadingTimestamp | None = None


class JobProgress(BaseModel):
    #: readings gone through; ``total``: readings in the job's scope when it was accepted
    done: int
    total: int


class JobOut(Out):
    id: uuid.UUID
    kind: Literal["reprocess"] = "reprocess"
    status: JobStatus
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    profile_version: str
    run_id: uuid.UUID | None
    since: datetime | None
    until: datetime | None
    progress: JobProgress
    #: of the readings gone through: values written under ``profile_version``; readings
    #: first converted by it already (their value is its value); readings it cannot convert
    #: (out of its range: they keep their first value)
    converted: int
    unchanged: int
    unconvertible: int
    #: the versions that first converted the readings gone through
    from_versions: list[str]
    #: where the job got to: the timestamp of the last reading it went through
    cursor: datetime | None
    error: str | None
    created_by: uuid.UUID | None
    cancelled_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
