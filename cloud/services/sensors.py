from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.deps import Principal
from cloud.errors import Conflict, FieldError, InvalidInput
from cloud.pagination import Keyset, int64, newest_first
from cloud.schemas import ProfileIn, SensorIn, SensorOut, SensorPatch, normalize_name
from cloud.services import journal
from cloud.services.scope import get_in_project, require_project
from common.profiles import ProfileError, build_converter

TOKEN_PREFIX = "bls_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """(token, its hash, a preview safe to show). 32 random bytes = 256 bits."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token), f"{token[:8]}…{token[-4:]}"


def validate_profile(
    profile: ProfileIn, display_unit: str, *, at: str = "conversion_profile"
) -> None:
    """Refuse a profile its kind cannot build; ``at`` is where the profile sits in the body."""
    try:
        build_converter(profile.kind, profile.payload, display_unit)
    except ProfileError as exc:
        prefix = f"{at}." if at else ""
        raise InvalidInput(
            f"invalid conversion profile: {exc}",
            errors=[
                FieldError(prefix + _profile_field(field), reason) for field, reason in exc.errors
            ],
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
    validate_profile(body.conversion_profile, body.display_unit)
    _unique_name(db, caller.project_id, body.name)
    token, token_hash, preview = new_token()
    sensor = models.Sensor(
        project_id=caller.project_id,
        name=body.name,
        type=body.type,
        input_unit=body.input_unit,
        display_unit=body.display_unit,
        token_hash=token_hash,
        token_preview=preview,
        token_status="active",
        token_issued_at=datetime.now(UTC),
        profile_version=body.conversion_profile.version,
    )
    db.add(sensor)
    db.flush()
    _add_profile(db, sensor, body.conversion_profile, caller)
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


def _add_profile(db: Session, sensor: models.Sensor, profile: ProfileIn, caller: Principal) -> None:
    db.add(
        models.SensorProfile(
            sensor_id=sensor.id,
            version=profile.version,
            kind=profile.kind,
            payload=profile.payload,
            created_by=caller.user_id,
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
    S = models.Sensor
    q = select(S).where(S.project_id == caller.project_id)
    if name is not None:
        q = q.where(S.name == normalize_name(name))
    if sensor_type is not None:
        q = q.where(S.type == sensor_type)
    if token_status is not None:
        q = q.where(S.token_status == token_status)
    return newest_first(db, q, S, limit, cursor)


def to_outs(db: Session, sensors: Sequence[models.Sensor]) -> list[SensorOut]:
    """Like :func:`to_out` for a page of sensors, their current profiles in one query
    (not one per sensor)."""
    if not sensors:
        return []
    P, S = models.SensorProfile, models.Sensor
    current = db.scalars(
        select(P)
        .join(S, and_(S.id == P.sensor_id, S.profile_version == P.version))
        .where(S.id.in_([s.id for s in sensors]))
    )
    by_sensor = {p.sensor_id: p for p in current}
    return [_out(s, by_sensor[s.id]) for s in sensors]


def patch(db: Session, caller: Principal, sensor_id: uuid.UUID, body: SensorPatch) -> models.Sensor:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "name" in changes:
        _unique_name(db, caller.project_id, changes["name"], but=sensor.id)
    if "display_unit" in changes:
        # The current profile must still make sense in the new display unit.
        profile = current_profile(db, sensor)
        validate_profile(
            ProfileIn(version=profile.version, kind=profile.kind, payload=profile.payload),
            changes["display_unit"],
        )
    for key, value in changes.items():
        setattr(sensor, key, value)
    journal.record(
        db,
        "sensor.updated",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
        changes=changes,
    )
    return sensor


def rotate(db: Session, caller: Principal, sensor_id: uuid.UUID) -> tuple[models.Sensor, str]:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    token, token_hash, preview = new_token()
    sensor.token_hash, sensor.token_preview = token_hash, preview
    sensor.token_status, sensor.token_issued_at = "active", datetime.now(UTC)
    journal.record(
        db,
        "sensor.token_rotated",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
        token_preview=preview,
    )
    return sensor, token


def revoke(db: Session, caller: Principal, sensor_id: uuid.UUID) -> models.Sensor:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    sensor.token_hash = None
    sensor.token_status = "revoked"
    journal.record(
        db,
        "sensor.token_revoked",
        project_id=caller.project_id,
        actor=caller.actor,
        sensor_id=sensor.id,
    )
    return sensor


def set_profile(
    db: Session, caller: Principal, sensor_id: uuid.UUID, body: ProfileIn
) -> models.Sensor:
    sensor = get_in_project(db, models.Sensor, sensor_id, caller.project_id)
    validate_profile(body, sensor.display_unit, at="")
    exists = db.scalars(
        select(models.SensorProfile.id).where(
            models.SensorProfile.sensor_id == sensor.id,
            models.SensorProfile.version == body.version,
        )
    ).first()
    if exists is not None:
        raise Conflict(
            f"profile version {body.version!r} already exists for this sensor; versions are "
            "immutable, use a new one",
            errors=[FieldError("version", "already used")],
        )
    previous = sensor.profile_version
    _add_profile(db, sensor, body, caller)
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
    )
    return sensor


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
