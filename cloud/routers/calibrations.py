"""A sensor's calibration fits: ``/api/v1/sensors/{sensor_id}/calibrations``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from cloud.deps import DbSession, Editor, Viewer
from cloud.schemas import Page
from cloud.schemas_calibrations import CalibrationIn, CalibrationOut, CalibrationSummary
from cloud.services import calibrations

router = APIRouter(prefix="/api/v1/sensors", tags=["calibrations"])


@router.post("/{sensor_id}/calibrations", status_code=status.HTTP_201_CREATED)
def fit_calibration(
    sensor_id: uuid.UUID, body: CalibrationIn, db: DbSession, caller: Editor
) -> CalibrationOut:
    """Fit a correction ``reference ≈ c0 + c1·value + …`` (least squares, degree 0-3) to
    explicit ``points``, or to the sensor's readings between ``since`` and ``until`` paired
    with a reference sensor's (interpolated at each reading's time). The answer's
    ``proposed_profile`` is the body of ``PUT /conversion-profile`` that applies it. Too
    few points for the degree, or points that cannot tell its coefficients apart, is 422."""
    return calibrations.fit(db, caller, sensor_id, body)


@router.get("/{sensor_id}/calibrations")
def list_calibrations(
    sensor_id: uuid.UUID,
    db: DbSession,
    caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> Page[CalibrationSummary]:
    """The sensor's fits, newest first (without their points: GET one for those)."""
    rows, nxt = calibrations.list_fits(db, caller, sensor_id, limit, cursor)
    return Page(items=[calibrations.to_summary(r) for r in rows], next_cursor=nxt)


@router.get("/{sensor_id}/calibrations/{calibration_id}")
def get_calibration(
    sensor_id: uuid.UUID, calibration_id: uuid.UUID, db: DbSession, caller: Viewer
) -> CalibrationOut:
    return calibrations.get(db, caller, sensor_id, calibration_id)
