"""Wire model of a sensor's alarm rules as its edge pulls them
(``GET /api/v1/sensors/{sensor_id}/edge-rules``, with the sensor's own token).

Rules are in the sensor's display unit, so the edge also gets the conversion profile the
cloud converts its readings with: the edge evaluates the value the cloud will store, with
the same converter (:mod:`common.profiles`) and the same evaluator
(:mod:`common.alarm_eval`). Unknown fields are ignored (a newer cloud may send more).
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from common.alarm_eval import Spec

RuleKind = Literal["above", "below", "outside", "rate", "stale", "fault"]

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
    """The sensor's current conversion profile version and its units."""

    version: str
    kind: str
    payload: dict[str, Any]
    input_unit: str = ""
    display_unit: str = ""


class EdgeRules(_Wire):
    sensor_id: UUID
    profile: EdgeProfile | None = None
    rules: list[EdgeRule] = Field(default_factory=list)
