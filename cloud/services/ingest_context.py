"""What ingest knows of a batch before it stores it: the sensor of its token, with the
batch's run and capture session, the sensor's current profile and the batch stored under its
Idempotency-Key, read in one round trip (:func:`lookup`); whether its readings fall in the
session's window (:func:`window`); and their values under the profile (:func:`convert`,
converters cached per immutable version).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, false, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import Conflict, FieldError, Forbidden, InvalidInput
from cloud.services.sensors import hash_token, token_refused
from common.profiles import ConversionError, Converter, build_converter
from common.reading import ReadingBatch

#: Converters by (sensor, profile version, units): versions are immutable, so a key names
#: one converter for good, its unit conversions worked out once. Bounded by clearing;
#: rebuilding one is cheap.
_CONVERTERS: dict[tuple[uuid.UUID, str, str, str], Converter] = {}


def converter(ctx: Context) -> Converter:
    key = (ctx.sensor_id, ctx.profile_version, ctx.input_unit, ctx.display_unit)
    converter = _CONVERTERS.get(key)
    if converter is None:
        if len(_CONVERTERS) >= 4096:
            _CONVERTERS.clear()
        assert ctx.profile_kind is not None and ctx.profile_payload is not None
        # Lenient: units were checked when the version was stored; a version from before
        # units were checked (migration 0005 reports those) converts as it always did.
        converter = build_converter(
            ctx.profile_kind, ctx.profile_payload, ctx.display_unit, ctx.input_unit, lenient=True
        )
        _CONVERTERS[key] = converter
    return converter


def authenticate(db: Session, token: str | None, sensor_id: uuid.UUID) -> models.Sensor:
    if not token:
        raise token_refused(token)
    sensor = db.scalars(
        select(models.Sensor).where(models.Sensor.token_hash == hash_token(token))
    ).first()
    if sensor is None:
        raise token_refused(token)
    if sensor.id != sensor_id:
        raise Forbidden(f"this token belongs to another sensor than {sensor_id}")
    return sensor


S, R, C, P, B = (
    models.Sensor,
    models.Run,
    models.CaptureSession,
    models.SensorProfile,
    models.TelemetryBatch,
)


#: What ingest needs to know, as plain columns: loading four ORM entities per request was
#: a sixth of a small batch's cost. ``prev_*`` is the batch already stored under the
#: request's Idempotency-Key, if any.
_CONTEXT_COLUMNS = (
    S.id.label("sensor_id"),
    S.project_id,
    P.input_unit,
    P.display_unit,
    S.profile_version,
    S.alarm_rules,
    R.id.label("run_id"),
    R.project_id.label("run_project_id"),
    R.experiment_id,
    R.deleted_at.label("run_deleted_at"),
    C.id.label("session_id"),
    C.run_id.label("session_run_id"),
    C.status,
    C.started_at,
    C.stopped_at,
    P.kind.label("profile_kind"),
    P.payload.label("profile_payload"),
    P.effective_from.label("profile_effective_from"),
    B.id.label("prev_id"),
    B.fingerprint.label("prev_fingerprint"),
    B.count.label("prev_count"),
    B.late.label("prev_late"),
    B.profile_version.label("prev_profile_version"),
    B.first_ts.label("prev_first_ts"),
    B.last_ts.label("prev_last_ts"),
    B.request_batch_id.label("prev_request_id"),
)


class Context(NamedTuple):
    sensor_id: uuid.UUID
    project_id: uuid.UUID
    input_unit: str
    display_unit: str
    profile_version: str
    alarm_rules: int
    run_id: uuid.UUID | None
    run_project_id: uuid.UUID | None
    experiment_id: uuid.UUID | None
    run_deleted_at: datetime | None
    session_id: uuid.UUID | None
    session_run_id: uuid.UUID | None
    status: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    profile_kind: str | None
    profile_payload: dict[str, Any] | None
    #: From when the sensor's current version converts (ingest's one extra column: a batch
    #: stamped from then on, the common case, needs no other version).
    profile_effective_from: datetime | None
    prev_id: int | None
    prev_fingerprint: str | None
    prev_count: int | None
    prev_late: int | None
    prev_profile_version: str | None
    prev_first_ts: datetime | None
    prev_last_ts: datetime | None
    prev_request_id: int | None
    #: The display unit of the sensor's current version: alarm rules are set in it (a part
    #: of a request converted by an older version in another unit is not evaluated).
    current_display_unit: str | None = None


def lookup(db: Session, token: str | None, batch: ReadingBatch, key: str | None) -> Context:
    """The sensor of ``token`` with the batch's run, session, the sensor's current profile
    and the batch stored under ``key``, in one round trip. The checks on them are the
    caller's, in the same order as ever."""
    if not token:
        authenticate(db, token, batch.sensor_id)  # raises the 401
    # No key: join nothing (``idempotency_key = NULL`` would be no match anyway, but say so).
    same_key = and_(B.sensor_id == S.id, B.idempotency_key == key) if key else false()
    row = db.execute(
        select(*_CONTEXT_COLUMNS)
        .select_from(S)
        .outerjoin(R, R.id == batch.run_id)
        .outerjoin(C, C.id == batch.capture_session_id)
        .outerjoin(P, and_(P.sensor_id == S.id, P.version == S.profile_version))
        .outerjoin(B, same_key)
        .where(S.token_hash == hash_token(token or ""))
        .limit(1)
    ).first()
    if row is None or row.sensor_id != batch.sensor_id:
        authenticate(db, token, batch.sensor_id)  # raises the 401 or 403 it always did
    assert row is not None
    return Context(*row)


def window(
    ctx: Context, batch: ReadingBatch, now: datetime, future: timedelta, skew: timedelta
) -> bool:
    """Whether the batch's readings are late (all or none: it depends on the session only);
    raises, naming each one, if a reading falls outside the session's time: from its start
    minus ``skew`` (the bench PC's clock may lag) to now plus ``future`` while it runs, to
    its stop once it ended (late data)."""
    if ctx.status == "draft":
        raise Conflict(
            f"capture session {ctx.session_id} has not started (draft); start it before sending"
        )
    stamps = batch.timestamps
    start = ctx.started_at
    assert start is not None
    earliest = start - skew
    if ctx.status == "running":
        latest, late = now + future, False
        after = "is in the future"
    else:
        assert ctx.stopped_at is not None
        latest, late = ctx.stopped_at, True
        after = (
            f"capture session ended ({ctx.status}); only readings inside its window "
            f"{earliest.isoformat()}..{latest.isoformat()} are accepted"
        )
    if min(stamps) >= earliest and max(stamps) <= latest:  # two passes in C: the common case
        return late
    before = (
        f"is before its capture session started ({start.isoformat()}); readings from "
        f"{earliest.isoformat()} on are accepted (clock skew tolerance {skew.total_seconds():g} s)"
    )
    errors = [
        FieldError(f"readings.{i}.timestamp", before if ts < earliest else after)
        for i, ts in enumerate(stamps)
        if not earliest <= ts <= latest
    ]
    raise InvalidInput(
        f"{len(errors)} of {len(stamps)} readings cannot be accepted: "
        f"{errors[0].field} {errors[0].reason}",
        errors=errors,  # every bad reading: a sender can set those aside and resend the rest
    )


def convert(
    converter: Converter, ctx: Context, batch: ReadingBatch, indices: list[int] | None = None
) -> list[float]:
    """Every reading in the sensor's display unit; a 422 names each one that cannot be (by
    ``indices``, its index in the request, when ``batch`` is a part of one)."""
    convert = converter.convert
    try:  # the common case in one comprehension; the loop below only to name the failures
        return [convert(raw, meta) for raw, meta in zip(batch.raw_values, batch.metas, strict=True)]
    except ConversionError:
        pass
    errors = []
    for i, (raw, meta) in enumerate(zip(batch.raw_values, batch.metas, strict=True)):
        try:
            convert(raw, meta)
        except ConversionError as exc:
            at = indices[i] if indices is not None else i
            errors.append(FieldError(f"readings.{at}.raw_value", str(exc)))
    raise InvalidInput(
        f"{len(errors)} readings cannot be converted by profile {ctx.profile_version} "
        f"({ctx.profile_kind}): {errors[0].reason}",
        errors=errors,  # every bad reading: a sender can set those aside and resend the rest
    )
