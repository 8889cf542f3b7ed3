"""Answers of ``GET /api/v1/runs/compare``."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

#: Most runs one comparison takes.
MAX_RUNS = 20


class ComparedPoint(BaseModel):
    #: Seconds since the run's first capture session started (the overlay's time axis).
    t: float | None
    timestamp: datetime
    value: float
    min: float
    max: float
    count: int


class ComparedRun(BaseModel):
    run_id: uuid.UUID
    name: str | None
    #: Where ``t`` counts from: when the run's first capture session started.
    session_started_at: datetime | None
    total: int
    downsampled: bool
    points: list[ComparedPoint]


class Comparison(BaseModel):
    sensor_id: uuid.UUID
    sensor: str
    display_unit: str
    #: In the order the runs were asked for.
    runs: list[ComparedRun]
