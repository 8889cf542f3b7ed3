"""Readings stored straight into PostgreSQL through ingest's own write path: the batch row,
the telemetry store's binary COPY and the summaries of
:mod:`cloud.services.telemetry_rollup`, without HTTP, parsing or conversion. Ten million
readings take minutes this way instead of the tens of minutes the API would."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from bench.project import Bench
from cloud import utctime
from cloud.db import models
from cloud.db.engine import make_engine
from cloud.services import telemetry_rollup
from cloud.store.telemetry import telemetry_store
from cloud.store.telemetry.base import RollupKey, StoredBatch

#: Readings per stored batch, as the edge sends them.
BATCH = 1000
#: Batches per transaction: one commit per batch would cost more than the batch.
PER_COMMIT = 20


@dataclass(frozen=True)
class Target:
    """Where the readings go: a sensor of a project, in a run's capture session."""

    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    profile_version: str = "v1"

    @classmethod
    def of(cls, bench: Bench, sensor_id: str | None = None) -> Target:
        """The bootstrapped project's running session, for its sensor or ``sensor_id``."""
        return cls(
            uuid.UUID(bench.project_id),
            uuid.UUID(sensor_id or bench.sensor_id),
            uuid.UUID(bench.run_id),
            uuid.UUID(bench.capture_session_id),
        )


def store_readings(
    database_url: str,
    targets: Sequence[Target],
    start_us: int,
    step_us: int,
    indices: range,
    value: Callable[[int], float],
) -> None:
    """Reading i at ``start_us + i * step_us`` (microseconds since the Unix epoch), of value
    ``value(i)``, for each i in ``indices`` and each target, in batches of :data:`BATCH`
    interleaved between the targets in time order, as concurrent sensors send them."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            pending = 0
            for lo in range(indices.start, indices.stop, BATCH):
                idx = range(lo, min(lo + BATCH, indices.stop))
                stamps_us = [start_us + i * step_us for i in idx]
                values = [value(i) for i in idx]
                for target in targets:
                    _store_batch(db, target, stamps_us, values)
                pending += 1
                if pending == PER_COMMIT:
                    db.commit()
                    pending = 0
            db.commit()
    finally:
        engine.dispose()


def _store_batch(db: Session, target: Target, stamps_us: list[int], values: list[float]) -> None:
    level, cells = telemetry_rollup.summarise(stamps_us, values)
    first, last = (utctime.EPOCH + utctime.US * u for u in (stamps_us[0], stamps_us[-1]))
    batch_id = db.execute(
        insert(models.TelemetryBatch).returning(models.TelemetryBatch.id),
        {
            "sensor_id": target.sensor_id,
            "run_id": target.run_id,
            "capture_session_id": target.capture_session_id,
            "count": len(stamps_us),
            "late": 0,
            "profile_version": target.profile_version,
            "first_ts": first,
            "last_ts": last,
            "received_at": datetime.now(UTC),
            "rollup_level": level,
        },
    ).scalar_one()
    rows = StoredBatch(
        batch_id=batch_id,
        project_id=target.project_id,
        sensor_id=target.sensor_id,
        run_id=target.run_id,
        capture_session_id=target.capture_session_id,
        profile_version=target.profile_version,
        late=False,
        timestamps=[first] * len(stamps_us),  # only counted: the COPY takes stamps_us
        stamps_us=stamps_us,
        raw_values=values,
        values=values,
        metas=[None] * len(stamps_us),
    )
    store = telemetry_store(db)
    assert store.write(rows), "a bench batch's timestamps are new"
    store.add_rollups(RollupKey(target.sensor_id, target.capture_session_id, target.run_id), cells)
