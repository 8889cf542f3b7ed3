"""Bodies of ``/api/v1/sensors/{sensor_id}/calibrations``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from cloud.schemas import In, Out
from cloud.services.calibration_fit import MAX_DEGREE
from common.wire import ReadingTimestamp

#: Most pairs one fit takes (given, or found in a window): the answer lists each one.
MAX_POINTS = 10_000


class CalibrationPoint(In):
    #: What the sensor gave (in its display unit, under its current profile).
    value: float
    #: What the reference says it should have been, in the same unit.
    reference: float


class CalibrationIn(In):
    """Explicit ``points``, or a ``reference_sensor_id`` with a window ``since``-``until``
    whose readings are paired by time (the reference interpolated between its readings)."""

    model: Literal["polynomial"] = "polynomial"
    degree: int = Field(default=1, ge=0, le=MAX_DEGREE)
    points: list[CalibrationPoint] | None = Field(default=None, max_length=MAX_POINTS)
    reference_sensor_id: uuid.UUID | None = None
    since: ReadingTimestamp | None = None
    until: ReadingTimestamp | None = None


class FittedPoint(BaseModel):
    value: float
    reference: float
    #: The value after the correction, and corrected - reference.
    corrected: float
    residual: float
    #: The sensor's reading's time (a reference-sensor fit).
    timestamp: datetime | None = None


class ProposedProfile(BaseModel):
    """The body of ``PUT /api/v1/sensors/{sensor_id}/conversion-profile`` that applies the
    fit: the fitted profile version followed by the correction."""

    version: str
    kind: str
    payload: dict[str, Any]
    input_unit: str
    display_unit: str


class CalibrationSummary(Out):
    id: uuid.UUID
    sensor_id: uuid.UUID
    model: str
    degree: int
    source: Literal["points", "reference_sensor"]
    reference_sensor_id: uuid.UUID | None
    since: datetime | None
    until: datetime | None
    #: The profile version whose values were fitted.
    base_profile_version: str
    #: The unit of values, references, residuals and errors (the sensor's display unit).
    unit: str
    n_points: int
    degrees_of_freedom: int
    #: c0, c1, … of reference ≈ c0 + c1·value + …
    coefficients: list[float]
    #: Their standard errors and covariance; null when no degree of freedom is left.
    coefficient_standard_errors: list[float] | None
    covariance: list[list[float]] | None
    #: The standard uncertainty of a corrected value (the residuals' standard deviation).
    standard_uncertainty: float | None
    rms_error: float
    max_error: float
    condition_number: float
    #: Readings of the window the fitted profile could not convert (left out).
    unconvertible: int = 0
    proposed_profile: ProposedProfile
    created_by: uuid.UUID | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def calibration_id(self) -> uuid.UUID:
        return self.id


class CalibrationOut(CalibrationSummary):
    points: list[FittedPoint]
