"""The pydantic twin of :mod:`common.reading`'s wire batch: what the OpenAPI document shows,
and the judge of every body :func:`common.reading.decode` does not take (it words each
refusal, field by field, and reads the lax spellings the contract has always allowed).

Floats are finite (``allow_inf_nan=False``) and a reading's timestamp is RFC 3339 text with a
zone: a naive timestamp from a bench PC is ambiguous by hours and a bare number could be
seconds or milliseconds since anything, so both are rejected rather than guessed.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from common import reading
from common.reading import (
    MAX_META_DEPTH,
    MAX_READINGS_PER_BATCH,
    MAX_SEQ,
    MAX_TELEMETRY_BODY_BYTES,
    TELEMETRY_PATH,
    ReadingBatch,
)

__all__ = [
    "MAX_META_DEPTH",
    "MAX_READINGS_PER_BATCH",
    "MAX_TELEMETRY_BODY_BYTES",
    "TELEMETRY_PATH",
    "BodyRefused",
    "JsonObject",
    "Reading",
    "SequenceRanges",
    "TelemetryAccepted",
    "TelemetryBatch",
    "UtcDatetime",
    "legacy_fingerprint",
    "read_batch",
]


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("timestamp out of range once converted to UTC") from None


#: An RFC 3339 timestamp with a zone, normalised to UTC (a naive one is refused).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]

#: Date, time with seconds (a fraction optional), zone: ``Z`` or an offset (``+01:00``; the
#: ISO 8601 ``+0100`` too, which the fast decoder of the cloud reads alike).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})", re.ASCII
)


def _rfc3339_text(value: object) -> object:
    """A timestamp on the wire is RFC 3339 text with a zone: pydantic alone would also take
    a bare number (seconds since 1970), a string of digits or a time without seconds."""
    if isinstance(value, datetime):  # built in Python, not read from the wire
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError(
        "must be RFC 3339 text with a timezone (Z or +hh:mm), e.g. 2026-12-05T10:00:00.250Z;"
        " not a number, not a naive time"
    )


#: A reading's timestamp: RFC 3339 text with a zone only, normalised to UTC.
ReadingTimestamp = Annotated[UtcDatetime, BeforeValidator(_rfc3339_text)]


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    problem = reading.meta_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A JSON object whose numbers are all finite (Python's json reads NaN; PostgreSQL does not)
#: whose text is valid Unicode and which nests at most MAX_META_DEPTH levels.
JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Reading(WireModel):
    timestamp: ReadingTimestamp
    raw_value: float
    meta: JsonObject | None = None


SeqNumber = Annotated[int, Field(ge=1, le=MAX_SEQ)]


class SequenceRanges(WireModel):
    """The edge's sequence numbers of a batch's readings (optional; the edge daemon sends
    them, a batch sent by hand need not). The ranges number the readings in order: ascending,
    disjoint, holding exactly as many numbers as there are readings."""

    #: the edge buffer's id: its numbers start from 1 again in a new buffer (a new epoch)
    epoch: UUID
    #: ``[first, last]`` ranges, e.g. ``[[1001, 2000]]`` for a batch of 1,000 readings
    ranges: list[tuple[SeqNumber, SeqNumber]] = Field(min_length=1)


class TelemetryBatch(WireModel):
    sensor_id: UUID
    run_id: UUID
    capture_session_id: UUID
    readings: list[Reading] = Field(min_length=1)
    seq: SequenceRanges | None = None

    @field_validator("seq")
    @classmethod
    def _seq_numbers_readings(
        cls, seq: SequenceRanges | None, info: ValidationInfo
    ) -> SequenceRanges | None:
        readings = info.data.get("readings")
        if seq is not None and readings is not None:
            problem = reading.seq_problem(list(seq.ranges), len(readings))
            if problem is not None:
                raise ValueError(f"ranges: {problem}")
        return seq

    def columns(self) -> ReadingBatch:
        readings = self.readings
        seq = self.seq
        return ReadingBatch(
            sensor_id=self.sensor_id,
            run_id=self.run_id,
            capture_session_id=self.capture_session_id,
            timestamps=[r.timestamp for r in readings],  # UtcDatetime: already in UTC
            raw_values=[r.raw_value for r in readings],
            metas=[r.meta for r in readings],
            seq_epoch=None if seq is None else seq.epoch,
            seq_ranges=None if seq is None else list(seq.ranges),
        )


class TelemetryAccepted(BaseModel):
    """The 202 answer to a telemetry batch."""

    #: Readings stored by this batch.
    accepted: int
    #: Of those, readings of an ended session (late data).
    late: int
    #: Readings not stored because the sensor already had them (same timestamp, same raw
    #: value), e.g. from a second edge; a different value at a stored timestamp is a 422.
    duplicate: int = 0
    sensor_id: UUID
    run_id: UUID
    capture_session_id: UUID
    profile_version: str
    first_timestamp: datetime
    last_timestamp: datetime


class BodyRefused(ValueError):
    """A telemetry body refused before its fields are looked at: ``status`` 413 (too many
    readings) or 422 (no JSON), about ``field`` for ``reason``. A body that is JSON but
    not a batch raises pydantic's ValidationError instead, one error per field."""

    def __init__(self, status: int, detail: str, field: str, reason: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.reason = status, detail, field, reason


def read_batch(raw: bytes) -> ReadingBatch:
    """The batch in a request body, validated once: by :func:`common.reading.decode` when it
    takes it (a well-formed batch, one msgspec pass), else by :class:`TelemetryBatch`, which
    takes the lax spellings it always took and words every refusal. Raises
    :class:`BodyRefused` or pydantic's ValidationError."""
    batch = reading.decode(raw)
    if batch is not None:
        return batch
    try:
        model = TelemetryBatch.model_validate_json(raw)
    except ValidationError:
        pass
    else:
        if len(model.readings) <= MAX_READINGS_PER_BATCH:
            return model.columns()
    return _judged(raw).columns()


def _judged(raw: bytes) -> TelemetryBatch:
    """The refusal of a body, in the words of the refused part: no JSON, too many readings,
    else every field's reason (from the parsed object, so a reason names the reading)."""
    if not raw.strip():
        reason = "empty body; expected a JSON telemetry batch"
        raise BodyRefused(422, f"body: {reason}", "body", reason)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyRefused(422, f"request body is not valid JSON: {exc}", "body", str(exc)) from None
    except RecursionError:
        reason = "JSON nested too deeply"
        raise BodyRefused(422, f"body: {reason}", "body", reason) from None
    readings = data.get("readings") if isinstance(data, dict) else None
    if isinstance(readings, list) and len(readings) > MAX_READINGS_PER_BATCH:
        raise BodyRefused(
            413,
            f"{len(readings)} readings in one batch; at most {MAX_READINGS_PER_BATCH} are accepted",
            "readings",
            f"at most {MAX_READINGS_PER_BATCH} readings",
        )
    return TelemetryBatch.model_validate(data)


def legacy_fingerprint(batch: ReadingBatch) -> str:
    """The digest the first release stored under an Idempotency-Key: of this model's JSON
    dump. Only computed to recognise such a batch when it is sent again."""
    model = TelemetryBatch(
        sensor_id=batch.sensor_id,
        run_id=batch.run_id,
        capture_session_id=batch.capture_session_id,
        readings=[
            Reading(timestamp=t, raw_value=v, meta=m)
            for t, v, m in zip(batch.timestamps, batch.raw_values, batch.metas, strict=True)
        ],
    )
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()
