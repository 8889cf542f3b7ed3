"""Telemetry ingest (the hot path): a decoded batch checked against its sensor, run and
capture session, converted, and handed to the telemetry store in one piece (never one ORM
object per reading), with its batch row, journal entry and summaries.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models
from cloud.errors import Conflict, FieldError, InvalidInput, NotFound
from cloud.services import (
    alarms,
    ingest_answers,
    ingest_context,
    journal,
    profile_versions,
    telemetry_rollup,
)
from cloud.services.ingest_context import Context
from cloud.store.telemetry import telemetry_store
from cloud.store.telemetry.base import RollupKey, StoredBatch, TelemetryStore
from common.reading import ReadingBatch, to_ranges
from common.wire import TelemetryAccepted


@dataclass(frozen=True)
class IngestedBatch:
    """What was stored, handed to live listeners (inside the transaction, then after it)."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    display_unit: str
    profile_version: str
    first_ts: datetime
    last_ts: datetime
    rows: StoredBatch
    #: Alarm transitions the batch caused (live messages, sent after the commit).
    alarms: list[dict[str, Any]] = field(default_factory=list)


class Ingested(NamedTuple):
    """What :func:`ingest` did with a batch."""

    answer: TelemetryAccepted
    #: What to publish to live listeners; None when nothing new was stored.
    published: IngestedBatch | None
    #: The batch was stored before under this Idempotency-Key: its answer again.
    replayed: bool
    #: A request stored in parts, one per profile version: the other parts to publish.
    also_published: tuple[IngestedBatch, ...] = ()

    def publications(self) -> list[IngestedBatch]:
        """Every stored batch to publish, in the order stored."""
        return [*self.also_published, *([self.published] if self.published else [])]


def ingest(
    db: Session,
    token: str | None,
    batch: ReadingBatch,
    idempotency_key: str | None,
    future_tolerance: timedelta,
    clock_skew: timedelta,
) -> Ingested:
    """Store a batch. A sensor has one reading per timestamp: a copy of a stored reading (same
    timestamp, same raw value) is dropped and counted as ``duplicate``; another value at a
    stored timestamp is refused (422 naming the reading)."""
    ctx = ingest_context.lookup(db, token, batch, idempotency_key)
    ctx = ctx._replace(current_display_unit=ctx.display_unit)
    # A deleted run takes no readings (its sessions are stopped before it can be deleted; a
    # late batch from an offline edge is refused like any for an unknown run).
    if ctx.run_id is None or ctx.run_project_id != ctx.project_id or ctx.run_deleted_at:
        raise NotFound(f"run {batch.run_id} not found")
    if ctx.session_id is None or ctx.session_run_id != ctx.run_id:
        raise NotFound(f"capture session {batch.capture_session_id} not found in run {ctx.run_id}")
    if ctx.prev_id is not None:  # stored before under this key: the same batch, or a 422
        ingest_answers.same_batch(ctx.prev_fingerprint, batch)
        previous = ingest_answers.previous_of(ctx)
        return Ingested(ingest_answers.replayed(db, previous, len(batch)), None, True)
    now = datetime.now(UTC)
    late = ingest_context.window(ctx, batch, now, future_tolerance, clock_skew)
    assert ctx.profile_effective_from is not None
    if min(batch.timestamps) < ctx.profile_effective_from:  # some under earlier versions
        return profile_versions.ingest_across(db, ctx, batch, idempotency_key, now, late)
    return store_batch(db, ctx, batch, idempotency_key, now, late)


def store_batch(
    db: Session,
    ctx: Context,
    batch: ReadingBatch,
    idempotency_key: str | None,
    now: datetime,
    late: bool,
    part: profile_versions.Part | None = None,
) -> Ingested:
    """Convert with ``ctx``'s profile version and store ``batch``: the whole request, or
    one ``part`` of it (the readings of one version, their indices in the request)."""
    readings, origin = _readings(ctx, batch, late, part)
    store = telemetry_store(db)
    level, cells = telemetry_rollup.summarise(readings.stamps_us, readings.values)
    fields = _batch_fields(ctx, batch, readings, idempotency_key, now, level)
    if part is not None:
        fields.update(fingerprint=part.fingerprint, request_batch_id=part.request_batch_id)
    new_id = store.insert_batch(fields)
    if new_id is None:
        # Another request with this key committed between our lookup and our insert (a
        # retry racing the original): it stored the readings; answer as a replay.
        previous = ingest_answers.previous(
            db, ctx.sensor_id, idempotency_key or "", part.request if part else batch
        )
        assert previous is not None
        return Ingested(ingest_answers.replayed(db, previous, len(batch)), None, True)
    rows = replace(readings, batch_id=new_id)
    if part is not None:
        origin = [part.indices[k] for k in origin] if origin else part.indices
    if not store.write(rows):
        # Some of these timestamps were stored already (another batch, another edge): keep
        # only what is new, and let the batch, its summaries and the live stream say so.
        rows = _store_new(store, rows, origin)
        cells = _recount(db, new_id, fields, rows)
    if batch.seq_ranges is not None:
        _store_seq_ranges(db, batch, rows, new_id, part.seq_copies if part else ())
    record = models.TelemetryBatch(id=new_id, **fields)
    _journal(db, ctx, record, len(batch))
    if not rows:  # every reading was a copy: nothing to summarise or to publish
        return Ingested(ingest_answers.accepted(record, len(batch)), None, False)
    # Last: concurrent ingests of this sensor and session share the coarse cells' rows, and
    # each holds them locked from here to its commit.
    store.add_rollups(RollupKey(ctx.sensor_id, rows.capture_session_id, rows.run_id), cells)
    # Only a sensor with rules is evaluated (the count came with the lookup). After the
    # summaries: its rule rows are locked to the commit too, and batches of one sensor
    # already wait for each other there.
    in_rule_unit = ctx.display_unit == (ctx.current_display_unit or ctx.display_unit)
    raised = alarms.evaluate_batch(db, rows, now) if ctx.alarm_rules and in_rule_unit else []
    published = _publication(ctx, record, rows, raised)
    return Ingested(ingest_answers.accepted(record, len(batch)), published, False)


def _publication(
    ctx: Context, record: models.TelemetryBatch, rows: StoredBatch, raised: list[dict[str, Any]]
) -> IngestedBatch:
    return IngestedBatch(
        batch_id=record.id,
        project_id=ctx.project_id,
        sensor_id=ctx.sensor_id,
        run_id=rows.run_id,
        capture_session_id=rows.capture_session_id,
        display_unit=ctx.display_unit,
        profile_version=ctx.profile_version,
        first_ts=record.first_ts,
        last_ts=record.last_ts,
        rows=rows,
        alarms=raised,
    )


_SEQ_RANGES = cast(Table, models.TelemetrySeqRange.__table__)


def _store_seq_ranges(
    db: Session,
    batch: ReadingBatch,
    rows: StoredBatch,
    batch_id: int,
    extra_copies: Sequence[int] = (),
) -> None:
    """The edge sequence numbers the batch brought, in its transaction: those of the readings
    it stored, and (``duplicate``) those of readings already stored by another batch, and
    ``extra_copies`` (a request split by profile version: its copies of its own readings)."""
    assert batch.seq_epoch is not None and batch.seq_ranges is not None
    if len(rows) == len(batch) and not extra_copies:  # the common case: the ranges as sent
        stored, copies = [list(r) for r in batch.seq_ranges], []
    else:
        kept = rows.seqs or []
        stored = to_ranges(kept)
        dropped = set(numbers(batch.seq_ranges)) - set(kept)
        copies = to_ranges(sorted(dropped.union(extra_copies)))
    shared = {
        "batch_id": batch_id,
        "sensor_id": rows.sensor_id,
        "run_id": rows.run_id,
        "capture_session_id": rows.capture_session_id,
        "epoch": batch.seq_epoch,
    }
    db.connection().execute(
        _SEQ_RANGES.insert(),
        [
            {**shared, "seq_first": a, "seq_last": b, "duplicate": dup}
            for ranges, dup in ((stored, False), (copies, True))
            for a, b in ranges
        ],
    )


def numbers(ranges: list[tuple[int, int]]) -> list[int]:
    """The numbers of ascending ranges, in order (C-level: no Python loop per reading)."""
    if len(ranges) == 1:
        return list(range(ranges[0][0], ranges[0][1] + 1))
    return list(itertools.chain.from_iterable(range(a, b + 1) for a, b in ranges))


def _readings(
    ctx: Context, batch: ReadingBatch, late: bool, part: profile_versions.Part | None = None
) -> tuple[StoredBatch, list[int] | None]:
    """The batch's readings converted, one per timestamp (batch id still 0), and the index
    in the batch of each one kept when some were copies (None: all kept). A ``part`` has no
    copies left (the whole request was checked) and was converted already."""
    if ctx.profile_kind is None:  # cannot happen (a sensor always has its profile)
        raise LookupError(f"sensor {ctx.sensor_id} has no profile {ctx.profile_version}")
    assert ctx.run_id is not None and ctx.session_id is not None
    stamps_us = [utctime.micros(t) for t in batch.timestamps]
    rows = StoredBatch(
        batch_id=0,
        project_id=ctx.project_id,
        sensor_id=ctx.sensor_id,
        run_id=ctx.run_id,
        capture_session_id=ctx.session_id,
        profile_version=ctx.profile_version,
        late=late,
        timestamps=batch.timestamps,
        stamps_us=stamps_us,
        raw_values=batch.raw_values,
        values=part.values
        if part is not None
        else ingest_context.convert(ingest_context.converter(ctx), ctx, batch),
        metas=batch.metas,
        seqs=None if batch.seq_ranges is None else numbers(batch.seq_ranges),
    )
    if part is not None:
        return rows, None
    if len(set(stamps_us)) == len(stamps_us):  # the common case, one pass in C
        return rows, None
    origin = first_of_each_timestamp(batch.raw_values, stamps_us)
    return rows.only(origin), origin


def _batch_fields(
    ctx: Context,
    batch: ReadingBatch,
    rows: StoredBatch,
    key: str | None,
    now: datetime,
    level: int,
) -> dict[str, Any]:
    """The batch row's columns."""
    return {
        "sensor_id": ctx.sensor_id,
        "run_id": rows.run_id,
        "capture_session_id": rows.capture_session_id,
        "idempotency_key": key,
        "fingerprint": batch.fingerprint(),
        "count": len(rows),
        "late": len(rows) if rows.late else 0,
        "profile_version": ctx.profile_version,
        "first_ts": min(rows.timestamps),
        "last_ts": max(rows.timestamps),
        "received_at": now,
        "rollup_level": level,
    }


def _recount(
    db: Session, batch_id: int, fields: dict[str, Any], rows: StoredBatch
) -> list[telemetry_rollup.Cell]:
    """Update the batch row (and ``fields``) to the readings it stored; their summaries."""
    level, cells = telemetry_rollup.summarise(rows.stamps_us, rows.values) if rows else (0, [])
    fields.update(
        count=len(rows),
        late=len(rows) if rows.late else 0,
        first_ts=min(rows.timestamps, default=fields["first_ts"]),
        last_ts=max(rows.timestamps, default=fields["last_ts"]),
        rollup_level=level,
    )
    changed = ("count", "late", "first_ts", "last_ts", "rollup_level")
    db.execute(
        update(_BATCHES)
        .where(_BATCHES.c.id == batch_id)
        .values(**{name: fields[name] for name in changed})
    )
    return cells


def _journal(db: Session, ctx: Context, record: models.TelemetryBatch, received: int) -> None:
    journal.record(
        db,
        "telemetry.ingested",
        project_id=ctx.project_id,
        actor=f"sensor:{ctx.sensor_id}",
        experiment_id=ctx.experiment_id,
        run_id=record.run_id,
        capture_session_id=record.capture_session_id,
        sensor_id=ctx.sensor_id,
        count=record.count,
        late=record.late,
        duplicate=received - record.count,
        first_timestamp=record.first_ts,
        last_timestamp=record.last_ts,
        profile_version=ctx.profile_version,
    )


def first_of_each_timestamp(raws: list[float], stamps_us: list[int]) -> list[int]:
    """The index of each reading that is the first of its timestamp: a later one with the
    same raw value is a copy, dropped; a 422 names each later one with another value."""
    first: dict[int, int] = {}
    keep: list[int] = []
    errors: list[FieldError] = []
    for i, us in enumerate(stamps_us):
        j = first.setdefault(us, i)
        if j == i:
            keep.append(i)
        elif raws[i] != raws[j]:
            errors.append(
                FieldError(
                    f"readings.{i}.timestamp",
                    f"readings.{j} of this batch has this timestamp with raw_value {raws[j]!r};"
                    f" {ONE_PER_TIMESTAMP}",
                )
            )
    if errors:
        raise _refused(errors, "another value at a timestamp of this batch")
    return keep


def _refused(errors: list[FieldError], what: str) -> InvalidInput:
    """Every refused reading at once: a sender can set those aside and resend the rest."""
    n = len(errors)
    return InvalidInput(
        f"{n} reading{'s' if n != 1 else ''} refused, {what}: {errors[0].field} {errors[0].reason}",
        errors=errors,
    )


ONE_PER_TIMESTAMP = "a sensor has one reading per timestamp"
_BATCHES = cast(Table, models.TelemetryBatch.__table__)


def _store_new(store: TelemetryStore, rows: StoredBatch, origin: list[int] | None) -> StoredBatch:
    """Insert the readings whose timestamps are free and return them; every other one must
    be a copy of the stored reading (same raw value), else a 422 names it.

    The store's insert waits for a concurrent writer of the same timestamp and skips the row
    once that one committed; the lookup after it (a new snapshot) then sees its value."""
    inserted = store.write_free(rows)
    micros = rows.stamps_us
    taken = [k for k, us in enumerate(micros) if us not in inserted]
    stored = store.stored_raw_values(rows.sensor_id, [rows.timestamps[k] for k in taken])
    errors = []
    for k in taken:
        other = stored.get(micros[k])
        if other is None:  # its writer rolled back after ours skipped it: cannot happen
            raise Conflict("a concurrent request wrote and withdrew these readings; send again")
        if other != rows.raw_values[k]:
            errors.append(
                FieldError(
                    f"readings.{origin[k] if origin else k}.timestamp",
                    f"this sensor already has a reading at this timestamp with raw_value"
                    f" {other!r}; {ONE_PER_TIMESTAMP}",
                )
            )
    if errors:
        raise _refused(errors, "another value at the timestamp of a stored reading")
    return rows.only([k for k, us in enumerate(micros) if us in inserted])
