"""A sensor's alarm rules for its edge, which evaluates them on the readings it captures so
that a bench offline from the cloud still logs and shows them. The cloud stays the record:
the edge posts no alarm, the cloud raises each one at ingest (late, for a backlog).

Authenticated by the sensor's own token, as its readings are: every edge holds the tokens
of its sensors (the edge token is optional), and a token answers for its sensor only.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.services.alarm_rules import NEEDS
from cloud.services.ingest_context import authenticate
from common.edge_rules import MAX_PROFILES, EdgeProfile, EdgeRule, EdgeRules

AR, P = models.AlarmRule, models.SensorProfile


def rules_for_edge(db: Session, token: str | None, sensor_id: uuid.UUID) -> EdgeRules:
    """The sensor's live rules (its own and its runs'), with its conversion profile
    versions; 401 for a token that is not a sensor's, 403 for another sensor's."""
    sensor = authenticate(db, token, sensor_id)
    profiles = db.scalars(
        select(P)
        .where(P.sensor_id == sensor.id)
        .order_by(P.effective_from.desc(), P.id.desc())
        .limit(MAX_PROFILES)
    ).all()
    current = next((p for p in profiles if p.version == sensor.profile_version), None)
    rules = db.scalars(
        select(AR).where(AR.sensor_id == sensor.id, AR.deleted_at.is_(None)).order_by(AR.id)
    ).all()
    return EdgeRules(
        sensor_id=sensor.id,
        display_unit=current.display_unit if current is not None else "",
        profiles=[
            EdgeProfile(
                version=p.version,
                kind=p.kind,
                payload=p.payload,
                input_unit=p.input_unit,
                display_unit=p.display_unit,
                effective_from=p.effective_from,
            )
            for p in reversed(profiles)
        ],
        rules=[
            EdgeRule(
                id=r.id,
                run_id=r.run_id,
                kind=r.kind,
                for_s=r.for_s or 0.0,
                hysteresis=r.hysteresis or 0.0,
                **{n: getattr(r, n) for n in NEEDS[r.kind]},
            )
            for r in rules
        ],
    )
