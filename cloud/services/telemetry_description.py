"""What an export of readings is about: its experiments, runs, capture sessions and sensors
with their profiles, found from the filter without reading the readings (a few index probes),
so that it can head a stream of any size."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import CaptureSession, SensorProfile
from cloud.services.telemetry_query import ReadingFilter

T = models.TelemetryReading
#: Bumped when the columns or the description change in a way a reader must know.
SCHEMA_VERSION = 1


@dataclass
class Description:
    filter: ReadingFilter
    experiments: list[models.Experiment] = field(default_factory=list)
    runs: list[models.Run] = field(default_factory=list)
    sessions: list[models.CaptureSession] = field(default_factory=list)
    sensors: list[models.Sensor] = field(default_factory=list)
    profiles: list[models.SensorProfile] = field(default_factory=list)
    exported_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_json(self) -> dict[str, Any]:
        f = self.filter
        wanted = {
            "run_id": f.run_id,
            "sensor_id": f.sensor_id,
            "capture_session_id": f.capture_session_id,
            "since": f.since,
            "until": f.until,
        }
        return {
            "kind": "telemetry",
            "schema_version": SCHEMA_VERSION,
            "exported_at": iso(self.exported_at),
            "project_id": str(f.project_id),
            "filter": {
                k: iso(v) if isinstance(v, datetime) else str(v)
                for k, v in wanted.items()
                if v is not None
            },
            "experiments": [experiment_json(e) for e in self.experiments],
            "runs": [run_json(r) for r in self.runs],
            "capture_sessions": [_session(s) for s in self.sessions],
            "sensors": [_sensor(s, self.profiles) for s in self.sensors],
        }


def describe(db: Session, f: ReadingFilter) -> Description:
    f.where()  # the filter is complete
    conn = db.connection()
    sessions = _sessions(db, f)
    if f.sensor_id is not None:
        sensor_ids = [f.sensor_id]
    else:
        sensor_ids = sorted({s for cs in sessions for s in _session_sensors(conn, cs.id)})
    run_ids = {cs.run_id for cs in sessions} | ({f.run_id} if f.run_id else set())
    runs = _by_ids(db, models.Run, run_ids, models.Run.created_at)
    experiments = _by_ids(
        db, models.Experiment, {r.experiment_id for r in runs}, models.Experiment.created_at
    )
    sensors = _by_ids(db, models.Sensor, set(sensor_ids), models.Sensor.name)
    profiles = list(
        db.scalars(
            select(SensorProfile)
            .where(SensorProfile.sensor_id.in_(sensor_ids))
            .order_by(SensorProfile.sensor_id, SensorProfile.id)
        )
    )
    return Description(f, experiments, runs, sessions, sensors, profiles)


def _by_ids(db: Session, model: Any, ids: Iterable[uuid.UUID], order: Any) -> list[Any]:
    wanted = list(ids)
    if not wanted:
        return []
    return list(db.scalars(select(model).where(model.id.in_(wanted)).order_by(order, model.id)))


def _sessions(db: Session, f: ReadingFilter) -> list[models.CaptureSession]:
    """The capture sessions whose readings the filter can take."""
    q = select(CaptureSession).where(CaptureSession.project_id == f.project_id)
    if f.capture_session_id is not None:
        q = q.where(CaptureSession.id == f.capture_session_id)
    elif f.run_id is not None:
        q = q.where(CaptureSession.run_id == f.run_id)
    else:  # a sensor's: each session probed once in ix_telemetry_session_sensor_ts
        probe = exists().where(
            T.capture_session_id == CaptureSession.id, T.sensor_id == f.sensor_id
        )
        q = q.where(probe)
    return list(db.scalars(q.order_by(CaptureSession.run_id, CaptureSession.ordinal_number)))


def _session_sensors(conn: Connection, session_id: uuid.UUID) -> list[uuid.UUID]:
    """The sensors with readings in a session: one descent of ix_telemetry_session_sensor_ts
    per sensor (the next sensor after the last found), not a DISTINCT over its readings."""
    first = select(T.sensor_id).where(T.capture_session_id == session_id)
    found: list[uuid.UUID] = []
    stmt = first.order_by(T.sensor_id).limit(1)
    while (s := conn.execute(stmt).scalar()) is not None:
        found.append(s)
        stmt = first.where(T.sensor_id > s).order_by(T.sensor_id).limit(1)
    return found


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def experiment_json(e: models.Experiment) -> dict[str, Any]:
    return {
        "id": str(e.id),
        "name": e.name,
        "description": e.description,
        "tags": list(e.tags or []),
        "status": e.status,
    }


def run_json(r: models.Run) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "experiment_id": str(r.experiment_id),
        "name": r.name,
        "status": r.status,
        "params": dict(r.params or {}),
        "tags": list(r.tags or []),
        "started_at": iso(r.started_at),
        "ended_at": iso(r.ended_at),
    }


def _session(s: models.CaptureSession) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "run_id": str(s.run_id),
        "ordinal_number": s.ordinal_number,
        "status": s.status,
        "notes": s.notes,
        "started_at": iso(s.started_at),
        "stopped_at": iso(s.stopped_at),
    }


def _sensor(s: models.Sensor, profiles: list[models.SensorProfile]) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "name": s.name,
        "type": s.type,
        "input_unit": s.input_unit,
        "display_unit": s.display_unit,
        "profile_version": s.profile_version,
        "profiles": [
            {
                "version": p.version,
                "kind": p.kind,
                "payload": p.payload,
                "input_unit": p.input_unit,
                "display_unit": p.display_unit,
                "created_at": iso(p.created_at),
                # The readings stamped from then on, up to the next one's, are its own.
                "effective_from": iso(p.effective_from),
            }
            for p in profiles
            if p.sensor_id == s.id
        ],
    }
