"""Calibration fits of a sensor: pairs in, a least-squares correction out, kept with a
proposed profile version (the fitted conversion followed by the correction) that
``PUT /api/v1/sensors/{sensor_id}/conversion-profile`` applies as it is."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import SensorCalibration, TelemetryReading
from cloud.errors import NotFound, invalid
from cloud.identity import Principal
from cloud.pagination import newest_first
from cloud.schemas_calibrations import (
    MAX_POINTS,
    CalibrationIn,
    CalibrationOut,
    CalibrationSummary,
)
from cloud.services import journal, sensors, telemetry_query
from cloud.services.calibration_fit import Fit, FitRefused, compose, fit_polynomial
from cloud.services.scope import get_in_project
from common import units
from common.profiles import ConversionError, Converter, build_converter, split_correction

#: Most readings of the reference sensor one window may hold (a faster reference than the
#: sensor: 20 of its readings around each of the sensor's).
MAX_REFERENCE_READINGS = 20 * MAX_POINTS


@dataclass
class Pairs:
    values: list[float]
    references: list[float]
    timestamps: list[datetime] | None = None
    unconvertible: int = 0
    field: str = "points"  # what a refusal names


def fit(
    db: Session, caller: Principal, sensor_id: uuid.UUID, body: CalibrationIn
) -> CalibrationOut:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    profile = sensors.current_profile(db, sensor)
    pairs = _given(body) if body.points is not None else _from_reference(db, caller, sensor, body)
    try:
        result = fit_polynomial(pairs.values, pairs.references, body.degree)
    except FitRefused as exc:
        raise invalid(pairs.field, exc.reason) from None
    row = models.SensorCalibration(
        id=uuid.uuid4(),
        sensor_id=sensor.id,
        project_id=caller.project_id,
        model=body.model,
        degree=body.degree,
        source="points" if body.points is not None else "reference_sensor",
        reference_sensor_id=body.reference_sensor_id,
        since=body.since,
        until=body.until,
        base_profile_version=profile.version,
        created_by=caller.user_id,
    )
    proposal = _proposal(db, sensor, profile, result, row.id)
    row.result = _result(result, pairs, profile, proposal)
    db.add(row)
    db.flush()
    journal.record(
        db,
        "sensor.calibration_fitted",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
        calibration_id=row.id,
        source=row.source,
        degree=row.degree,
        n_points=len(pairs.values),
        coefficients=result.coefficients,
        rms_error=result.rms_error,
        max_error=result.max_error,
        standard_uncertainty=result.standard_uncertainty,
        base_profile_version=profile.version,
        proposed_version=proposal["version"],
    )
    return to_out(row)


def _given(body: CalibrationIn) -> Pairs:
    given = [f for f in ("reference_sensor_id", "since", "until") if getattr(body, f) is not None]
    if given:
        raise invalid(given[0], "give either points, or reference_sensor_id, since and until")
    assert body.points is not None
    return Pairs([p.value for p in body.points], [p.reference for p in body.points])


def _from_reference(
    db: Session, caller: Principal, sensor: models.Sensor, body: CalibrationIn
) -> Pairs:
    """The sensor's readings in the window, each paired with the reference's value at its
    time (linear between the reference's readings either side; none beyond them)."""
    if body.reference_sensor_id is None:
        raise invalid("points", "give either points, or reference_sensor_id, since and until")
    for name in ("since", "until"):
        if getattr(body, name) is None:
            raise invalid(name, "a reference-sensor fit needs its window: since and until")
    assert body.since is not None and body.until is not None
    if body.since >= body.until:
        raise invalid("until", "must be after since")
    reference = db.get(models.Sensor, body.reference_sensor_id)
    if reference is None or reference.project_id != caller.project_id:
        raise invalid("reference_sensor_id", "no such sensor in this project")
    if reference.id == sensor.id:
        raise invalid("reference_sensor_id", "is the sensor being calibrated")
    own_t, own_v, bad = _converted(db, sensor, body.since, body.until, MAX_POINTS)
    # The reference's readings either side of the window too: the sensor's first and last
    # readings in it pair as well as the others.
    since, until = _widened(db, reference, body.since, body.until)
    ref_t, ref_v, _ = _converted(db, reference, since, until, MAX_REFERENCE_READINGS)
    a, b = _unit_scale(reference, sensor)
    import numpy as np  # at the first fit, not when the app is built (see calibration_fit)

    inside = [i for i, t in enumerate(own_t) if ref_t and ref_t[0] <= t <= ref_t[-1]]
    micros = np.array([_us(own_t[i]) for i in inside], dtype=np.float64)
    interpolated = np.interp(micros, [_us(t) for t in ref_t], ref_v) if inside else micros
    return Pairs(
        values=[own_v[i] for i in inside],
        references=[a * float(r) + b for r in interpolated],
        timestamps=[own_t[i] for i in inside],
        unconvertible=bad,
        field="since",
    )


def _widened(
    db: Session, sensor: models.Sensor, since: datetime, until: datetime
) -> tuple[datetime, datetime]:
    """[since, until] out to the sensor's last reading before and first one after it."""
    mine = and_(TelemetryReading.sensor_id == sensor.id, *_visible(db, sensor))
    before = db.scalar(
        select(TelemetryReading.ts)
        .where(mine, TelemetryReading.ts < since)
        .order_by(TelemetryReading.ts.desc())
        .limit(1)
    )
    after = db.scalar(
        select(TelemetryReading.ts)
        .where(mine, TelemetryReading.ts > until)
        .order_by(TelemetryReading.ts)
        .limit(1)
    )
    return before or since, after or until


def _visible(db: Session, sensor: models.Sensor) -> list[Any]:
    """Leaves out the readings of deleted runs: a fit never uses data its owner removed."""
    hidden = telemetry_query.hidden_runs(db, sensor.project_id)
    return [models.TelemetryReading.run_id.not_in(hidden)] if hidden else []


def _us(t: datetime) -> float:
    # Microseconds since 1970 are below 2**53 until the year 2255: exact as a float.
    return t.timestamp() * 1e6


def _converted(
    db: Session, sensor: models.Sensor, since: datetime, until: datetime, most: int
) -> tuple[list[datetime], list[float], int]:
    """The sensor's readings in [since, until] in time order, converted by its current
    profile (the values a correction of that profile applies to); and how many it could
    not convert."""
    rows = db.execute(
        select(TelemetryReading.ts, TelemetryReading.raw_value, TelemetryReading.meta)
        .where(
            TelemetryReading.sensor_id == sensor.id,
            TelemetryReading.ts >= since,
            TelemetryReading.ts <= until,
            *_visible(db, sensor),
        )
        .order_by(TelemetryReading.ts)
        .limit(most + 1)
    ).all()
    if len(rows) > most:
        raise invalid(
            "until",
            f"sensor {sensor.name!r} has more than {most} readings in the window; narrow it",
        )
    converter = _converter(db, sensor)
    stamps, values, bad = [], [], 0
    for ts, raw, meta in rows:
        try:
            values.append(converter.convert(raw, meta))
        except ConversionError:
            bad += 1
            continue
        stamps.append(ts)
    return stamps, values, bad


def _converter(db: Session, sensor: models.Sensor) -> Converter:
    p = sensors.current_profile(db, sensor)
    # Lenient as ingest is: the version's units were checked when it was stored.
    return build_converter(
        p.kind,
        p.payload,
        p.display_unit or sensor.display_unit,
        p.input_unit or sensor.input_unit,
        lenient=True,
    )


def _unit_scale(reference: models.Sensor, sensor: models.Sensor) -> tuple[float, float]:
    """``(a, b)`` taking the reference's display unit to the sensor's."""
    try:
        return units.affine(units.parse(reference.display_unit), units.parse(sensor.display_unit))
    except units.UnitError as exc:
        raise invalid("reference_sensor_id", f"its values do not compare: {exc}") from None


def _proposal(
    db: Session,
    sensor: models.Sensor,
    profile: models.SensorProfile,
    result: Fit,
    calibration_id: uuid.UUID,
) -> dict[str, Any]:
    """The fitted version followed by the correction. The values fitted already passed the
    version's own correction, if it has one: the new one is composed with it."""
    base, existing = split_correction(profile.payload)
    coefficients = result.coefficients
    if existing is not None:
        coefficients = compose(coefficients, existing.coefficients)
    correction = {"coefficients": coefficients, "calibration_id": str(calibration_id)}
    return {
        "version": sensors.next_version(db, sensor),
        "kind": profile.kind,
        "payload": {**base, "correction": correction},
        "input_unit": profile.input_unit or sensor.input_unit,
        "display_unit": profile.display_unit or sensor.display_unit,
    }


def _result(
    result: Fit, pairs: Pairs, profile: models.SensorProfile, proposal: dict[str, Any]
) -> dict[str, Any]:
    stamps: Sequence[datetime | None] = pairs.timestamps or [None] * len(pairs.values)
    return {
        "unit": proposal["display_unit"],
        "n_points": len(pairs.values),
        "degrees_of_freedom": result.degrees_of_freedom,
        "coefficients": result.coefficients,
        "coefficient_standard_errors": result.standard_errors,
        "covariance": result.covariance,
        "standard_uncertainty": result.standard_uncertainty,
        "rms_error": result.rms_error,
        "max_error": result.max_error,
        "condition_number": result.condition_number,
        "unconvertible": pairs.unconvertible,
        "proposed_profile": proposal,
        "points": [
            {
                "value": v,
                "reference": r,
                "corrected": c,
                "residual": e,
                "timestamp": None if t is None else t.isoformat(),
            }
            for v, r, c, e, t in zip(
                pairs.values,
                pairs.references,
                result.corrected,
                result.residuals,
                stamps,
                strict=True,
            )
        ],
    }


def to_out(row: models.SensorCalibration) -> CalibrationOut:
    return CalibrationOut.model_validate({**row.result, **_columns(row)})


def to_summary(row: models.SensorCalibration) -> CalibrationSummary:
    return CalibrationSummary.model_validate({**row.result, **_columns(row)})


def _columns(row: models.SensorCalibration) -> dict[str, Any]:
    return {c: getattr(row, c) for c in _COLUMNS}


_COLUMNS = (
    "id",
    "sensor_id",
    "model",
    "degree",
    "source",
    "reference_sensor_id",
    "since",
    "until",
    "base_profile_version",
    "created_by",
    "created_at",
)


def get(
    db: Session, caller: Principal, sensor_id: uuid.UUID, calibration_id: uuid.UUID
) -> CalibrationOut:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    row = get_in_project(db, models.SensorCalibration, calibration_id, caller.project_id)
    if row.sensor_id != sensor.id:
        raise NotFound(f"sensor calibration {calibration_id} not found")
    return to_out(row)


def list_fits(
    db: Session, caller: Principal, sensor_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[Sequence[models.SensorCalibration], str | None]:
    """The sensor's fits, newest first."""
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    return newest_first(
        db,
        select(SensorCalibration).where(SensorCalibration.sensor_id == sensor.id),
        SensorCalibration,
        limit,
        cursor,
    )
