"""Readings read back for the live stream: a watched batch stored by another process, and
the batches after a resume point. Blocking; the hub calls it in a worker thread."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.live.hub import BatchHeader, Row, StreamFilter
from cloud.store.telemetry import telemetry_store

B, S = models.TelemetryBatch, models.Sensor
K = models.TelemetryBatchCommit
P = models.SensorProfile


class DatabaseStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def rows(self, headers: Sequence[BatchHeader]) -> dict[int, list[Row]]:
        with self.sessions() as db:
            return telemetry_store(db).batch_rows(headers)

    def headers_after(
        self, flt: StreamFilter, batch_id: int, limit: int
    ) -> list[BatchHeader] | None:
        """Batch ``batch_id`` and the batches ``flt`` matches that committed after it, in
        commit order (:mod:`cloud.live.positions`), until they hold more than ``limit``
        readings; None if ``batch_id`` is not the first of them. Not by batch id: a batch
        with a lower id may commit later, one with a higher id earlier."""
        since = select(K.position).where(K.batch_id == batch_id).scalar_subquery()
        q = (
            # The unit of the batch's own profile version: a unit change is a new version.
            select(K.position, B, P.display_unit)
            .join(B, B.id == K.batch_id)
            .join(S, S.id == B.sensor_id)
            .join(P, (P.sensor_id == B.sensor_id) & (P.version == B.profile_version))
            .where(K.position >= since, S.project_id == flt.project_id)
            .order_by(K.position)
        )
        for column, wanted in (
            (B.sensor_id, flt.sensor_id),
            (B.run_id, flt.run_id),
            (B.capture_session_id, flt.capture_session_id),
        ):
            if wanted is not None:
                q = q.where(column == wanted)
        out: list[BatchHeader] = []
        total = 0
        with self.sessions() as db:
            for position, batch, unit in db.execute(q.limit(limit + 1)):
                if not out and batch.id != batch_id:
                    return None
                out.append(
                    BatchHeader(
                        batch_id=batch.id,
                        project_id=flt.project_id,
                        sensor_id=batch.sensor_id,
                        run_id=batch.run_id,
                        capture_session_id=batch.capture_session_id,
                        unit=unit,
                        profile_version=batch.profile_version,
                        count=batch.count,
                        first_ts=batch.first_ts,
                        last_ts=batch.last_ts,
                        position=position,
                    )
                )
                total += batch.count
                if total > limit:
                    break
        return out or None
