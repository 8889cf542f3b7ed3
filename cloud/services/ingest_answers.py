"""The answers to a batch stored before under its Idempotency-Key: the same batch again is
answered as it was first (also when it was stored in parts, one per profile version), another
batch under that key is a 422.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import FieldError, InvalidInput
from cloud.services import profile_versions
from cloud.services.ingest_context import Context
from common.reading import ReadingBatch
from common.wire import TelemetryAccepted, legacy_fingerprint


def previous_of(ctx: Context) -> models.TelemetryBatch:
    """The batch stored under the request's key, as the lookup found it (transient)."""
    return models.TelemetryBatch(
        count=ctx.prev_count,
        late=ctx.prev_late,
        sensor_id=ctx.sensor_id,
        run_id=ctx.run_id,
        capture_session_id=ctx.session_id,
        profile_version=ctx.prev_profile_version,
        first_ts=ctx.prev_first_ts,
        last_ts=ctx.prev_last_ts,
        request_batch_id=ctx.prev_request_id,
    )


def replayed(db: Session, record: models.TelemetryBatch, received: int) -> TelemetryAccepted:
    """The answer a batch stored before was given: a request stored in parts (one batch per
    profile version) is answered for all of them."""
    if record.request_batch_id is not None:
        return accepted_parts(db, record.request_batch_id, received)
    return accepted(record, received)


def previous(
    db: Session, sensor_id: uuid.UUID, key: str, batch: ReadingBatch
) -> models.TelemetryBatch | None:
    """The batch already stored under ``key``; 422 if that key carried another batch."""
    previous = db.scalars(
        select(models.TelemetryBatch).where(
            models.TelemetryBatch.sensor_id == sensor_id,
            models.TelemetryBatch.idempotency_key == key,
        )
    ).first()
    if previous is not None:
        same_batch(previous.fingerprint, batch)
    return previous


def same_batch(stored: str | None, batch: ReadingBatch) -> None:
    """A key names one batch: 422 when it comes back with another one."""
    if stored is None:  # stored without one
        return
    same = (
        stored == batch.fingerprint()
        if stored.startswith("2:")
        else stored == legacy_fingerprint(batch)
    )
    if not same:
        raise InvalidInput(
            "this Idempotency-Key already carried another batch of this sensor",
            errors=[FieldError("header.Idempotency-Key", "already used for another batch")],
        )


def accepted_parts(db: Session, request_id: int, received: int) -> TelemetryAccepted:
    """The answer to a request stored in parts (one batch per profile version): their
    counts summed, the version of its newest reading."""
    parts = list(
        db.scalars(
            select(models.TelemetryBatch).where(
                models.TelemetryBatch.request_batch_id == request_id
            )
        )
    )
    return profile_versions.combined_answer(parts, received)


def accepted(record: models.TelemetryBatch, received: int) -> TelemetryAccepted:
    """The answer to a batch of ``received`` readings of which ``record.count`` were stored
    (the others were copies of stored readings)."""
    return TelemetryAccepted(
        accepted=record.count,
        late=record.late,
        duplicate=received - record.count,
        sensor_id=record.sensor_id,
        run_id=record.run_id,
        capture_session_id=record.capture_session_id,
        profile_version=record.profile_version,
        first_timestamp=record.first_ts,
        last_timestamp=record.last_ts,
    )
