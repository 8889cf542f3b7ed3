"""Ingest of a request whose readings fall under more than one profile version.

A sensor's versions each convert the readings stamped from their ``effective_from`` to the
next one's. Ingest looks up the current version only (:mod:`cloud.services.telemetry`); a
request with a reading stamped before the current version took effect (a late reading, an
edge that was offline when the version was set) comes here: the versions it needs are
loaded, and it is stored as one batch per version, each converted with its own. Every part
is an ordinary batch (its readings, journal entry, summaries and live stream say its
version and unit); the one that holds the Idempotency-Key and the others name it in
``request_batch_id``, so a retry is answered for the whole request.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud import utctime
from cloud.db import models
from cloud.errors import FieldError, InvalidInput
from cloud.services import ingest_context
from common.reading import ReadingBatch, to_ranges
from common.wire import TelemetryAccepted

if TYPE_CHECKING:
    from cloud.services.ingest_context import Context
    from cloud.services.telemetry import Ingested

P, B = models.SensorProfile, models.TelemetryBatch


@dataclass(frozen=True)
class Part:
    """The readings of a request that one version converts."""

    #: Their indices in the request (a 422 names a reading by it).
    indices: list[int]
    #: Their values, converted by the part's version.
    values: list[float]
    #: The request's fingerprint on the part holding its Idempotency-Key; None on others.
    fingerprint: str | None
    #: The id of the batch holding the request's Idempotency-Key (None: no key).
    request_batch_id: int | None
    #: The whole request.
    request: ReadingBatch
    #: Edge sequence numbers of the request's copies of its own readings (dropped before the
    #: split), recorded with the first part as copies: they arrived, and no part holds them.
    seq_copies: tuple[int, ...] = ()


def ingest_across(
    db: Session,
    ctx: Context,
    batch: ReadingBatch,
    key: str | None,
    now: datetime,
    late: bool,
) -> Ingested:
    """Store ``batch``, some of whose readings are stamped before the current version's
    ``effective_from``: each reading converted with the version effective at its timestamp."""
    from cloud.services import telemetry as t  # it calls this module: imported at use

    versions = _versions(db, ctx, max(batch.timestamps))
    starts = [v.effective_from for v in versions]
    stamps = batch.timestamps
    stamps_us = [utctime.micros(ts) for ts in stamps]
    # Copies inside the request first, so that a 422 names readings by their request index.
    keep: Sequence[int] = range(len(batch))
    if len(set(stamps_us)) != len(stamps_us):
        keep = t.first_of_each_timestamp(batch.raw_values, stamps_us)
    groups: dict[int, list[int]] = {}
    for i in keep:
        # A reading before the first version (stamped before 1970) takes the first.
        groups.setdefault(max(bisect_right(starts, stamps[i]) - 1, 0), []).append(i)
    contexts = {k: _with_version(ctx, versions[k]) for k in groups}
    if len(groups) == 1:  # every reading under one (earlier) version: one ordinary batch
        (k,) = groups
        return t.store_batch(db, contexts[k], batch, key, now, late)

    # Each part carries its readings' own sequence numbers (completeness counts them).
    numbers = None if batch.seq_ranges is None else t.numbers(batch.seq_ranges)
    subs = {k: _sub(batch, idx, numbers) for k, idx in groups.items()}
    kept = {i for idx in groups.values() for i in idx}
    copies = tuple(numbers[i] for i in range(len(batch)) if i not in kept) if numbers else ()
    values = _convert_parts(contexts, subs, groups)
    done = _store_parts(db, ctx, batch, key, now, late, contexts, subs, groups, values, copies)
    if isinstance(done, t.Ingested):  # the key's request committed meanwhile: its answer
        return done
    return _combined(batch, done)


def _convert_parts(
    contexts: dict[int, Context], subs: dict[int, ReadingBatch], groups: dict[int, list[int]]
) -> dict[int, list[float]]:
    """Each part's values under its version; every reading refused by its version in one 422."""
    values: dict[int, list[float]] = {}
    errors: list[FieldError] = []
    for k, idx in groups.items():
        vctx = contexts[k]
        try:
            values[k] = ingest_context.convert(ingest_context.converter(vctx), vctx, subs[k], idx)
        except InvalidInput as exc:
            errors.extend(exc.errors or [])
    if errors:
        raise InvalidInput(
            f"{len(errors)} readings cannot be converted by the profile version effective at "
            f"their timestamps: {errors[0].field} {errors[0].reason}",
            errors=sorted(errors, key=lambda e: int(e.field.split(".")[1])),
        )
    return values


def _store_parts(
    db: Session,
    ctx: Context,
    batch: ReadingBatch,
    key: str | None,
    now: datetime,
    late: bool,
    contexts: dict[int, Context],
    subs: dict[int, ReadingBatch],
    groups: dict[int, list[int]],
    values: dict[int, list[float]],
    copies: tuple[int, ...],
) -> list[Ingested] | Ingested:
    """Each part stored as a batch of its version, linked to the first by its request id; the
    first carries the key, the request's fingerprint and its copies' sequence numbers."""
    from cloud.services import telemetry as t

    done: list[Ingested] = []
    request_id: int | None = None
    for n, k in enumerate(sorted(groups)):
        part = Part(
            indices=groups[k],
            values=values[k],
            fingerprint=batch.fingerprint() if n == 0 else None,
            request_batch_id=request_id,
            request=batch,
            seq_copies=copies if n == 0 else (),
        )
        result = t.store_batch(db, contexts[k], subs[k], key if n == 0 else None, now, late, part)
        if result.replayed:  # the key's request committed meanwhile: its answer, ours unstored
            return result._replace(answer=result.answer.model_copy(update=_whole(batch, result)))
        done.append(result)
        if n == 0 and key is not None:
            request_id = _mark_request(db, ctx, key)
    return done


def _combined(batch: ReadingBatch, done: list[Ingested]) -> Ingested:
    """One answer for the request from its parts' answers."""
    from cloud.services import telemetry as t

    answers = [r.answer for r in done]
    accepted = sum(a.accepted for a in answers)
    answer = answers[-1].model_copy(
        update={
            "accepted": accepted,
            "late": sum(a.late for a in answers),
            "duplicate": len(batch) - accepted,
            "first_timestamp": min(a.first_timestamp for a in answers),
            "last_timestamp": max(a.last_timestamp for a in answers),
        }
    )
    published = [r.published for r in done if r.published is not None]
    return t.Ingested(
        answer,
        published[-1] if published else None,
        False,
        tuple(published[:-1]),
    )


def _whole(batch: ReadingBatch, result: Ingested) -> dict[str, int]:
    """A replay's duplicate count is against the whole request, not the part sent."""
    return {"duplicate": len(batch) - result.answer.accepted}


def _versions(db: Session, ctx: Context, until: datetime) -> list[models.SensorProfile]:
    """The sensor's versions effective by ``until``, oldest first (the first, effective from
    the epoch, always among them)."""
    return list(
        db.scalars(
            select(P)
            .where(P.sensor_id == ctx.sensor_id, P.effective_from <= until)
            .order_by(P.effective_from)
        )
    )


def _with_version(ctx: Context, v: models.SensorProfile) -> Context:
    return ctx._replace(
        profile_version=v.version,
        profile_kind=v.kind,
        profile_payload=v.payload,
        input_unit=v.input_unit,
        display_unit=v.display_unit,
        profile_effective_from=v.effective_from,
    )


def _sub(batch: ReadingBatch, indices: list[int], numbers: list[int] | None) -> ReadingBatch:
    """The request's readings at ``indices``, with their sequence numbers if it has them."""
    ranges = None
    if numbers is not None:
        ranges = [(a, b) for a, b in to_ranges(numbers[i] for i in indices)]
    return ReadingBatch(
        sensor_id=batch.sensor_id,
        run_id=batch.run_id,
        capture_session_id=batch.capture_session_id,
        timestamps=[batch.timestamps[i] for i in indices],
        raw_values=[batch.raw_values[i] for i in indices],
        metas=[batch.metas[i] for i in indices],
        seq_epoch=batch.seq_epoch if numbers is not None else None,
        seq_ranges=ranges,
    )


def _mark_request(db: Session, ctx: Context, key: str) -> int:
    """Name the batch holding ``key`` as its request's (the other parts name it too)."""
    first = db.scalars(
        select(B.id).where(B.sensor_id == ctx.sensor_id, B.idempotency_key == key)
    ).one()
    db.execute(update(B).where(B.id == first).values(request_batch_id=first))
    return first


def combined_answer(parts: Sequence[models.TelemetryBatch], received: int) -> TelemetryAccepted:
    """The answer to a request stored in ``parts``: their counts summed, the version of the
    last one (the newest of the request's versions)."""
    last = max(parts, key=lambda b: b.id)
    accepted = sum(b.count for b in parts)
    return TelemetryAccepted(
        accepted=accepted,
        late=sum(b.late for b in parts),
        duplicate=received - accepted,
        sensor_id=last.sensor_id,
        run_id=last.run_id,
        capture_session_id=last.capture_session_id,
        profile_version=last.profile_version,
        first_timestamp=min(b.first_ts for b in parts),
        last_timestamp=max(b.last_ts for b in parts),
    )
