"""Readings read back for the live stream: a watched batch stored by another process, and
the batches after a resume point. Blocking; the hub calls it in a worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.uow import read_only
from cloud.live import positions
from cloud.live.events import BatchHeader, Row, StreamFilter
from cloud.store.telemetry import telemetry_store

B, S = models.TelemetryBatch, models.Sensor
K = models.TelemetryBatchCommit
P = models.SensorProfile


class DatabaseStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def rows(self, headers: Sequence[BatchHeader]) -> dict[int, list[Row]]:
        with read_only(self.sessions) as db:
            return telemetry_store(db).batch_rows(headers)

    def position(self) -> int:
        """The newest commit position (0 before the first batch): a snapshot that sees it
        sees every lower one (:mod:`cloud.live.positions`)."""
        with read_only(self.sessions) as db:
            return positions.newest(db)

    def headers_after(
        self, flt: StreamFilter, batch_id: int, limit: int
    ) -> list[BatchHeader] | None:
        """Batch ``batch_id`` and the batches ``flt`` matches that committed after it, in
        commit order (:mod:`cloud.live.positions`), until they hold more than ``limit``
        readings; None if ``batch_id`` is not the first of them. Not by batch id: a batch
        with a lower id may commit later, one with a higher id earlier."""
        since = select(K.position).where(K.batch_id == batch_id).scalar_subquery()
        with read_only(self.sessions) as db:
            out = _collect(db, _matching(flt).where(K.position >= since), flt, limit)
        return out if out and out[0].batch_id == batch_id else None

    def headers_since(
        self, flt: StreamFilter, position: int, limit: int
    ) -> list[BatchHeader] | None:
        """The batches ``flt`` matches that committed after commit position ``position``, in
        commit order, until they hold more than ``limit`` readings; None if no batch has
        committed at ``position`` yet: a position from another database (or made up) would
        otherwise silence every live batch up to it."""
        with read_only(self.sessions) as db:
            newest = db.execute(select(func.max(K.position))).scalar() or 0
            if position > newest:
                return None
            return _collect(db, _matching(flt).where(K.position > position), flt, limit)


def _matching(flt: StreamFilter) -> Select[*tuple[Any, ...]]:
    """Commit position, batch and unit of the batches ``flt`` matches, in commit order."""
    q = (
        # The unit of the batch's own profile version: a unit change is a new version.
        select(K.position, B, P.display_unit)
        .join(B, B.id == K.batch_id)
        .join(S, S.id == B.sensor_id)
        .join(P, (P.sensor_id == B.sensor_id) & (P.version == B.profile_version))
        .where(S.project_id == flt.project_id)
        .order_by(K.position)
    )
    for column, wanted in (
        (B.sensor_id, flt.sensor_id),
        (B.run_id, flt.run_id),
        (B.capture_session_id, flt.capture_session_id),
    ):
        if wanted is not None:
            q = q.where(column == wanted)
    return q


def _collect(
    db: Session, q: Select[*tuple[Any, ...]], flt: StreamFilter, limit: int
) -> list[BatchHeader]:
    """The headers ``q`` finds, until they hold more than ``limit`` readings."""
    out: list[BatchHeader] = []
    total = 0
    for position, batch, unit in db.execute(q.limit(limit + 1)):
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
    return out
