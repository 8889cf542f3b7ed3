from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import Sensor, SensorProfile, TelemetryReading
from cloud.errors import Conflict, FieldError, InvalidInput, Unauthenticated, invalid
from cloud.identity import Principal
from cloud.pagination import Keyset, int64, newest_first
from cloud.schemas import (
    ProfileChange,
    ProfileIn,
    SensorIn,
    SensorOut,
    SensorPatch,
    normalize_name,
)
from cloud.services import journal, tokens
from cloud.services.scope import get_in_project, require_project
from cloud.services.tokens import TokenGate, bearer_token, hash_token

# Telemetry ingest and its middleware take these from here.
__all__ = ["TokenGate", "bearer_token", "hash_token"]
from common import units
from common.profiles import ProfileError, UnitMismatch, build_converter

TOKEN_PREFIX = "bls_"
#: A sensor's first profile version is effective from here: every reading has a version.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def token_refused(token: str | None) -> Unauthenticated:
    """The 401 for a missing, or an unknown, rotated or revoked, sensor token."""
    if not token:
        return Unauthenticated(
            "telemetry needs the sensor's token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Unauthenticated(
        "unknown, rotated or revoked sensor token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def normalise_unit(text: str, field: str) -> str:
    """The canonical spelling of a unit (``degC`` -> ``°C``); a 422 on ``field`` if none."""
    try:
        return units.canonical(text)
    except units.UnitError as exc:
        raise InvalidInput(f"{field}: {exc}", errors=[FieldError(field, str(exc))]) from None


def validate_profile(
    profile: ProfileIn,
    display_unit: str,
    input_unit: str,
    *,
    at: str = "conversion_profile",
) -> None:
    """Refuse a profile its kind cannot build, or that cannot take the sensor's units (named
    by their own fields); ``at`` is where the profile sits in the body."""
    try:
        build_converter(profile.kind, profile.payload, display_unit, input_unit)
    except ProfileError as exc:
        prefix = f"{at}." if at else ""
        raise InvalidInput(
            f"invalid conversion profile: {exc}",
            errors=[
                FieldError(prefix + _profile_field(field), reason) for field, reason in exc.errors
            ],
        ) from None
    except UnitMismatch as exc:
        raise InvalidInput(
            f"{exc.field} does not fit conversion profile {profile.version} ({profile.kind}): "
            f"{exc.reason}",
            errors=[FieldError(exc.field, exc.reason)],
        ) from None


def _profile_field(field: str) -> str:
    if field == "kind":
        return "kind"
    return f"payload.{field}" if field else "payload"


def to_out(db: Session, sensor: models.Sensor) -> SensorOut:
    return _out(sensor, current_profile(db, sensor))


def _out(sensor: models.Sensor, profile: models.SensorProfile) -> SensorOut:
    return SensorOut.model_validate(
        {
            **{c: getattr(sensor, c) for c in SensorOut.model_fields if c != "conversion_profile"},
            "conversion_profile": profile,
        }
    )


def current_profile(db: Session, sensor: models.Sensor) -> models.SensorProfile:
    profile = db.scalars(
        select(models.SensorProfile).where(
            models.SensorProfile.sensor_id == sensor.id,
            models.SensorProfile.version == sensor.profile_version,
        )
    ).one()
    return profile


def register(db: Session, caller: Principal, body: SensorIn) -> tuple[models.Sensor, str]:
    require_project(db, caller.project_id)
    input_unit = normalise_unit(body.input_unit, "input_unit")
    display_unit = normalise_unit(body.display_unit, "display_unit")
    validate_profile(body.conversion_profile, display_unit, input_unit)
    _unique_name(db, caller.project_id, body.name)
    sensor = models.Sensor(
        project_id=caller.project_id,
        name=body.name,
        type=body.type,
        input_unit=input_unit,
        display_unit=display_unit,
        profile_version=body.conversion_profile.version,
        expected_interval_s=body.expected_interval_s,
    )
    token = tokens.issue(sensor, TOKEN_PREFIX)
    db.add(sensor)
    db.flush()
    _add_profile(db, sensor, body.conversion_profile, caller, EPOCH)
    journal.record(
        db,
        "sensor.registered",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
        name=sensor.name,
        profile_version=sensor.profile_version,
    )
    return sensor, token


def _unique_name(
    db: Session, project_id: uuid.UUID, name: str, *, but: uuid.UUID | None = None
) -> None:
    q = select(models.Sensor.id).where(
        models.Sensor.project_id == project_id, models.Sensor.name == name
    )
    existing = db.scalars(q).first()
    if existing is not None and existing != but:
        raise Conflict(f"a sensor named {name!r} already exists in this project")


def _add_profile(
    db: Session,
    sensor: models.Sensor,
    profile: ProfileIn,
    caller: Principal,
    effective_from: datetime,
) -> None:
    """Store ``profile`` with the sensor's units as they are now."""
    db.add(
        models.SensorProfile(
            sensor_id=sensor.id,
            version=profile.version,
            kind=profile.kind,
            payload=profile.payload,
            input_unit=sensor.input_unit,
            display_unit=sensor.display_unit,
            created_by=caller.user_id,
            effective_from=effective_from,
        )
    )


def list_sensors(
    db: Session,
    caller: Principal,
    *,
    name: str | None,
    sensor_type: str | None,
    token_status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[Sequence[models.Sensor], str | None]:
    """The project's sensors, newest first; ``name`` is exact (unique in a project)."""
    q = select(Sensor).where(Sensor.project_id == caller.project_id)
    if name is not None:
        q = q.where(Sensor.name == normalize_name(name))
    if sensor_type is not None:
        q = q.where(Sensor.type == sensor_type)
    if token_status is not None:
        q = q.where(Sensor.token_status == token_status)
    return newest_first(db, q, Sensor, limit, cursor)


def to_outs(db: Session, sensors: Sequence[models.Sensor]) -> list[SensorOut]:
    """Like :func:`to_out` for a page of sensors, their current profiles in one query
    (not one per sensor)."""
    if not sensors:
        return []
    current = db.scalars(
        select(SensorProfile)
        .join(
            Sensor,
            and_(
                Sensor.id == SensorProfile.sensor_id,
                Sensor.profile_version == SensorProfile.version,
            ),
        )
        .where(Sensor.id.in_([s.id for s in sensors]))
    )
    by_sensor = {p.sensor_id: p for p in current}
    return [_out(s, by_sensor[s.id]) for s in sensors]


def patch(db: Session, caller: Principal, sensor_id: uuid.UUID, body: SensorPatch) -> models.Sensor:
    """Rename or retype a sensor; a change of unit is a new profile version (the same
    conversion between other units), never a relabelling of the values already stored."""
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "expected_interval_s" in body.model_fields_set and body.expected_interval_s is None:
        changes["expected_interval_s"] = None  # null clears it (other fields: null is absent)
    new_version = changes.pop("profile_version", None)
    effective_from = changes.pop("effective_from", None)
    if "name" in changes:
        _unique_name(db, caller.project_id, changes["name"], but=sensor.id)
    for unit in ("input_unit", "display_unit"):
        if unit in changes:
            changes[unit] = normalise_unit(changes[unit], unit)
            if changes[unit] == getattr(sensor, unit):
                del changes[unit]
    unit_changes = {k: v for k, v in changes.items() if k in ("input_unit", "display_unit")}
    for field, given in (("profile_version", new_version), ("effective_from", effective_from)):
        if given is not None and not unit_changes:
            raise invalid(
                field,
                "is for the profile version a change of input_unit or display_unit makes; "
                "this request changes no unit",
            )
    for key, value in changes.items():
        if key not in unit_changes:
            setattr(sensor, key, value)
    if changes:
        journal.record(
            db,
            "sensor.updated",
            project_id=caller.project_id,
            actor=caller.actor,
            sensor_id=sensor.id,
            changes=changes,
        )
    if unit_changes:
        current = current_profile(db, sensor)
        version = new_version or next_version(db, sensor)
        _new_version(
            db,
            caller,
            sensor,
            ProfileIn(version=version, kind=current.kind, payload=current.payload),
            input_unit=unit_changes.get("input_unit", sensor.input_unit),
            display_unit=unit_changes.get("display_unit", sensor.display_unit),
            at="profile_version" if new_version else "",
            effective_from=effective_from,
        )
    return sensor


def next_version(db: Session, sensor: models.Sensor) -> str:
    """The current version's name with its trailing number raised (v1 -> v2, cal-2024 ->
    cal-2025), else with "-2" appended; the first such name not taken."""
    taken = set(
        db.scalars(
            select(models.SensorProfile.version).where(models.SensorProfile.sensor_id == sensor.id)
        )
    )
    match = re.fullmatch(r"(.*?)(\d+)", sensor.profile_version)
    stem, n = (match.group(1), int(match.group(2))) if match else (sensor.profile_version + "-", 1)
    while True:
        n += 1
        name = f"{stem}{n}"
        if name not in taken and len(name) <= 64:
            return name
        if len(name) > 64:
            stem, n = "v", 1


def rotate(db: Session, caller: Principal, sensor_id: uuid.UUID) -> tuple[models.Sensor, str]:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    token = tokens.issue(sensor, TOKEN_PREFIX)
    journal.record(
        db,
        "sensor.token_rotated",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
        token_preview=sensor.token_preview,
    )
    return sensor, token


def revoke(db: Session, caller: Principal, sensor_id: uuid.UUID) -> models.Sensor:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    tokens.revoke(sensor)
    journal.record(
        db,
        "sensor.token_revoked",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
    )
    return sensor


def set_profile(
    db: Session, caller: Principal, sensor_id: uuid.UUID, body: ProfileChange
) -> tuple[models.Sensor, int]:
    """Add a version effective from ``body.effective_from`` (default: now); the sensor and
    how many of its stored readings are stamped from then on (converted by an earlier
    version, they keep their values: re-deriving them is reprocessing)."""
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    input_unit = (
        sensor.input_unit
        if body.input_unit is None
        else normalise_unit(body.input_unit, "input_unit")
    )
    display_unit = (
        sensor.display_unit
        if body.display_unit is None
        else normalise_unit(body.display_unit, "display_unit")
    )
    profile = ProfileIn(version=body.version, kind=body.kind, payload=body.payload)
    return sensor, _new_version(
        db,
        caller,
        sensor,
        profile,
        input_unit,
        display_unit,
        at="version",
        effective_from=body.effective_from,
    )


def stored_since(db: Session, sensor_id: uuid.UUID, since: datetime) -> int:
    """How many of the sensor's stored readings are stamped at or after ``since`` (one range
    of the sensor-and-timestamp index; none for a version effective from now)."""
    return (
        db.scalar(
            select(func.count())
            .select_from(TelemetryReading)
            .where(TelemetryReading.sensor_id == sensor_id, TelemetryReading.ts >= since)
        )
        or 0
    )


def _new_version(
    db: Session,
    caller: Principal,
    sensor: models.Sensor,
    body: ProfileIn,
    input_unit: str,
    display_unit: str,
    *,
    at: str,
    effective_from: datetime | None,
) -> int:
    """Add ``body`` as the sensor's current profile, converting between these units, for
    readings stamped from ``effective_from`` on (None: now); ``at`` names the field that
    gave the version's name (for a 409). Returns how many stored readings are stamped from
    then on (they keep their values).

    A version only ever starts after the current one: inserted before it, the version just
    set would not be the current one, and readings arriving now would convert with an
    older one than the lab last chose."""
    validate_profile(body, display_unit, input_unit, at="")
    current = current_profile(db, sensor)
    effective_from = _effective_from(effective_from, current)
    _refuse_used_version(db, sensor, body.version, at)
    _refuse_unit_change_under_rules(sensor, display_unit)
    previous = sensor.profile_version
    to_reprocess = stored_since(db, sensor.id, effective_from)
    sensor.input_unit, sensor.display_unit = input_unit, display_unit
    _add_profile(db, sensor, body, caller, effective_from)
    sensor.profile_version = body.version
    journal.record(
        db,
        "sensor.profile_changed",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
        version=body.version,
        previous_version=previous,
        kind=body.kind,
        input_unit=input_unit,
        display_unit=display_unit,
        effective_from=effective_from,
        previous_effective_from=current.effective_from,
        readings_to_reprocess=to_reprocess,
    )
    return to_reprocess


def _effective_from(asked: datetime | None, current: models.SensorProfile) -> datetime:
    """When a new version starts: now by default; never in the future, never at or before
    the current version's start."""
    now = datetime.now(UTC)
    if asked is None:
        asked = now
    elif asked > now:
        raise invalid(
            "effective_from",
            f"is in the future ({asked.isoformat()}, now {now.isoformat()}); "
            "set a version when it applies",
        )
    if asked <= current.effective_from:
        raise Conflict(
            f"effective_from {asked.isoformat()} is not after the current version "
            f"{current.version!r}'s ({current.effective_from.isoformat()}); a new version "
            "starts after the current one",
            errors=[
                FieldError(
                    "effective_from",
                    f"must be after {current.effective_from.isoformat()}, when the current "
                    f"version {current.version!r} took effect",
                )
            ],
        )
    return asked


def _refuse_used_version(db: Session, sensor: models.Sensor, version: str, at: str) -> None:
    exists = db.scalars(
        select(models.SensorProfile.id).where(
            models.SensorProfile.sensor_id == sensor.id,
            models.SensorProfile.version == version,
        )
    ).first()
    if exists is not None:
        raise Conflict(
            f"profile version {version!r} already exists for this sensor; versions are "
            "immutable, use a new one",
            errors=[FieldError(at or "version", "already used")],
        )


def _refuse_unit_change_under_rules(sensor: models.Sensor, display_unit: str) -> None:
    if display_unit != sensor.display_unit and sensor.alarm_rules:
        # A rule's thresholds are numbers in the unit the sensor had when it was set: the
        # same numbers against values in another unit would raise (or miss) alarms.
        raise Conflict(
            f"the sensor has {sensor.alarm_rules} alarm rule(s) whose thresholds are in "
            f"{sensor.display_unit}; delete them before changing display_unit to "
            f"{display_unit}, then set them again in the new unit",
            errors=[FieldError("display_unit", "alarm rules are set in the current unit")],
        )


# The version history in the order it was written; ids only grow, so the id alone is a
# unique, stable key.
PROFILE_HISTORY = Keyset(
    "conversion_profiles",
    (models.SensorProfile.id,),
    (int64,),
    lambda p: (p.id,),
)


def profiles(
    db: Session,
    caller: Principal,
    sensor_id: uuid.UUID,
    *,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.SensorProfile], str | None]:
    """The sensor's conversion profiles, oldest first (the current one is the last)."""
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    q = select(models.SensorProfile).where(models.SensorProfile.sensor_id == sensor.id)
    if kind is not None:
        q = q.where(models.SensorProfile.kind == kind)
    return PROFILE_HISTORY.page(db, q, limit, cursor)
