"""Which value of a reading a read answers: its first one (``telemetry_readings.value``,
from the version that converted it at ingest) or one reprocessed under another version
(``reprocessed_values``, :mod:`cloud.services.reprocess`).

A read asks for a version by name (``?profile_version=``) or, by default, for each
sensor's current version. A reading answers that version's value when it has one: its first
value if that version converted it at ingest, else its reprocessed value; a reading with
neither (never reprocessed under that version, or outside what it converts) answers its
first value. Every reading says the version its value comes from, so an answer is never
silently mixed.

Which sensors have reprocessed values under which versions is read from the jobs (a few
rows): a read of a sensor that has none joins nothing and costs what it always did (the
chart then reads the summaries kept at ingest, which hold first values).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import FromClause

from cloud.db import models
from cloud.db.models import Sensor, SensorProfile
from cloud.errors import invalid

T, V, J = models.TelemetryReading, models.ReprocessedValue, models.ReprocessJob
#: (sensor, version) pairs whose reprocessed values a read takes.
Wanted = tuple[tuple[uuid.UUID, str], ...]


def wanted(
    db: Session, project_id: uuid.UUID, sensor_id: uuid.UUID | None, requested: str | None
) -> Wanted:
    """The sensors of the read (one, or the project's) with reprocessed values under the
    version asked for (default: each one's current version)."""
    if requested is not None:
        _check_exists(db, project_id, sensor_id, requested)
    q = select(J.sensor_id, J.profile_version).where(J.project_id == project_id, J.converted > 0)
    if sensor_id is not None:
        q = q.where(J.sensor_id == sensor_id)
    if requested is not None:
        q = q.where(J.profile_version == requested)
    else:
        q = q.join(Sensor, Sensor.id == J.sensor_id).where(
            J.profile_version == Sensor.profile_version
        )
    return tuple(sorted({(s, v) for s, v in db.execute(q.distinct())}))


def _check_exists(
    db: Session, project_id: uuid.UUID, sensor_id: uuid.UUID | None, version: str
) -> None:
    q = (
        select(SensorProfile.id)
        .join(Sensor, Sensor.id == SensorProfile.sensor_id)
        .where(Sensor.project_id == project_id)
    )
    q = q.where(SensorProfile.version == version)
    if sensor_id is not None:
        q = q.where(SensorProfile.sensor_id == sensor_id)
    if db.scalar(q.limit(1)) is None:
        whose = f"sensor {sensor_id}" if sensor_id is not None else "no sensor of the project"
        raise invalid("profile_version", f"{whose} has no profile version {version!r}")


def _version_of(pairs: Wanted) -> Any:
    """The version whose reprocessed value each reading takes (NULL: its first value)."""
    if len(pairs) == 1:
        return literal(pairs[0][1])
    return case({s: v for s, v in pairs}, value=T.sensor_id, else_=None)


def source(pairs: Wanted) -> FromClause:
    """The readings, joined to the reprocessed values asked for (when there are any)."""
    readings: FromClause = T.__table__
    if not pairs:
        return readings
    on = and_(V.reading_id == T.id, V.profile_version == _version_of(pairs))
    return readings.outerjoin(V, on)


def value_columns(pairs: Wanted) -> tuple[Any, Any]:
    """The value and the version it comes from, over :func:`source`."""
    if not pairs:
        return T.value, T.profile_version
    return func.coalesce(V.value, T.value), func.coalesce(V.profile_version, T.profile_version)


def page_values(db: Session, pairs: Wanted, rows: Sequence[Any]) -> dict[int, tuple[float, str]]:
    """Reprocessed (value, version) of the readings of a page that have one, by id: one
    primary-key lookup per version asked for, on the page's readings only."""
    if not pairs:
        return {}
    version_of = dict(pairs)
    by_version: dict[str, list[int]] = {}
    for r in rows:
        v = version_of.get(r.sensor_id)
        if v is not None and r.profile_version != v:
            by_version.setdefault(v, []).append(r.id)
    found: dict[int, tuple[float, str]] = {}
    for version, ids in by_version.items():
        for lo in range(0, len(ids), 1000):
            q = select(V.reading_id, V.value).where(
                V.profile_version == version, V.reading_id.in_(ids[lo : lo + 1000])
            )
            found.update((rid, (value, version)) for rid, value in db.execute(q))
    return found
