"""Wire model of a sensor's alarm rules as its edge pulls them
(``GET /api/v1/sensors/{sensor_id}/edge-rules``, with the sensor's own token).

Rules are in the sensor's display unit, so the edge also gets the conversion profile
versions the cloud converts its readings with (each from its ``effective_from``, as the
cloud picks one by a reading's timestamp): the edge evaluates the value the cloud will
store, with the same converter (:mod:`common.profiles`) and the same evaluator
(:mod:`common.alarm_eval`). Unknown fields are ignored (a newer cloud may send more).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from common.alarm_eval import Spec

RuleKind = Literal["above", "below", "outside", "rate", "stale", "fault"]

#: most profile versions one answer carries (the newest; readings stamped before the oldest
#: of them are not evaluated at the edge)
MAX_PROFILES = 50

#: the path an edge pulls a sensor's rules from ({sensor_id} filled in)
EDGE_RULES_PATH = "/api/v1/sensors/{sensor_id}/edge-rules"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class EdgeRule(_Wire):
    id: UUID
    #: the rule applies to this run only (it replaces the sensor's rule of its kind there)
    run_id: UUID | None = None
    kind: RuleKind
    threshold: float | None = None
    low: float | None = None
    high: float | None = None
    window_s: float | None = None
    after_s: float | None = None
    for_s: float = 0.0
    hysteresis: float = 0.0

    def spec(self) -> Spec:
        return Spec(
            kind=self.kind,
            threshold=self.threshold,
            low=self.low,
            high=self.high,
            window_s=self.window_s,
            for_s=self.for_s,
            hysteresis=self.hysteresis,
        )


class EdgeProfile(_Wire):
    """A conversion profile version of the sensor, its units, and the time from which
    readings (by their timestamp) convert with it."""

    version: str
    kind: str
    payload: dict[str, Any]
    input_unit: str = ""
    display_unit: str = ""
    effective_from: datetime


class EdgeRules(_Wire):
    sensor_id: UUID
    #: the sensor's display unit, the unit of its rules' numbers
    display_unit: str = ""
    #: its profile versions, oldest first (the newest :data:`MAX_PROFILES`)
    profiles: list[EdgeProfile] = Field(default_factory=list)
    rules: list[EdgeRule] = Field(default_factory=list)
