"""Bodies and answers of alarm rules and alarms (:mod:`cloud.routers.alarms`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from cloud.schemas import In, Out

AlarmKind = Literal["above", "below", "outside", "rate", "stale", "fault"]
AlarmState = Literal["raised", "acknowledged", "cleared"]

#: Seconds: at most a day (a hold or a silence longer than that is no live alarm).
Seconds = Field(ge=0, le=86_400)


class AlarmRuleIn(In):
    """``above``/``below``: ``threshold``; ``outside``: ``low`` and ``high``; ``rate``:
    ``threshold`` (units per second, either direction) over ``window_s``; ``stale``:
    ``after_s`` without a reading; ``fault``: a reading whose meta carries ``fault``.
    ``for_s``: how long (in reading time) the condition must hold before the alarm is
    raised; ``hysteresis``: how far back past the limit a value must be to clear it.
    ``run_id``: for that run only (it overrides the sensor's rule of the same kind)."""

    kind: AlarmKind
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    window_s: float | None = Field(default=None, gt=0, le=86_400)
    after_s: float | None = Field(default=None, gt=0, le=86_400)
    for_s: float = Field(default=0.0, ge=0, le=86_400)
    hysteresis: float = Field(default=0.0, ge=0)
    run_id: uuid.UUID | None = None


class AlarmRulePatch(In):
    """Fields to change (the kind stays); the rule is checked whole again."""

    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    window_s: float | None = Field(default=None, gt=0, le=86_400)
    after_s: float | None = Field(default=None, gt=0, le=86_400)
    for_s: float | None = Field(default=None, ge=0, le=86_400)
    hysteresis: float | None = Field(default=None, ge=0)


class AlarmRuleOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID | None
    kind: AlarmKind
    threshold: float | None
    low: float | None
    high: float | None
    window_s: float | None
    after_s: float | None
    for_s: float
    hysteresis: float
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class AlarmOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    rule_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID | None
    capture_session_id: uuid.UUID | None
    kind: AlarmKind
    rule: dict[str, Any]
    state: AlarmState
    #: The time of the reading that satisfied the rule (for ``stale``: the last reading's
    #: time plus ``after_s``).
    raised_at: datetime
    #: The triggering value (None for ``stale``).
    value: float | None
    #: Raised more than the late limit after ``raised_at`` (the reading came in late, e.g.
    #: from an edge that was offline).
    late: bool
    cleared_at: datetime | None
    cleared_value: float | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None


class AckIn(In):
    note: str = Field(default="", max_length=5000)
