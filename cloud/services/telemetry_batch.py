"""A telemetry batch as ingest uses it: columns of UTC timestamps, raw values and metas.

Two ways in, one result:

- :func:`decode_fast` reads the JSON with msgspec straight into typed structs (about twenty
  times cheaper per reading than pydantic, which was half of ingest's CPU). It accepts a
  subset of what the wire model accepts and answers ``None`` for anything else.
- :meth:`IncomingBatch.from_model` takes the pydantic :class:`~common.wire.TelemetryBatch`,
  the contract and the path that gives every documented error; the router falls back to it
  whenever the fast path says ``None``.

So a batch the fast path accepts is one the wire model accepts with the same values, and
everything else (lax input such as ``"2.5"`` for a number, and every error) is the wire
model's business. ``tests/cloud/test_telemetry_decode.py`` checks the two against each other.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from common.wire import MAX_READINGS_PER_BATCH, TelemetryBatch


# gc=False: these never take part in a reference cycle (JSON values only), and a thousand
# GC-tracked objects per batch made the collector run often (0.8 -> 0.3 ms per 1000).
class _Reading(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]  # a naive one goes the slow way
    raw_value: float  # msgspec refuses NaN/Infinity tokens and out-of-range numbers
    meta: dict[str, Any] | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    readings: Annotated[list[_Reading], msgspec.Meta(min_length=1)]


_DECODER = msgspec.json.Decoder(_Batch)
_ENCODER = msgspec.json.Encoder()
#: Seconds with more than six fractional digits: msgspec rounds them to the microsecond
#: where pydantic truncates, so such a body goes the slow way and is stored the same either
#: way. Fraction digits then a zone: no JSON number looks like that, and the leading literal
#: keeps the scan at ~40 µs per 1000 readings (a pattern starting with \d cost 0.4 ms). A
#: match inside a meta string only costs the slow path.
_SUBMICRO = re.compile(rb"\.\d{7,}[Zz+-]")


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """One sensor's readings for one capture session, validated, timestamps in UTC."""

    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    timestamps: list[datetime]
    raw_values: list[float]
    metas: list[dict[str, Any] | None]

    def __len__(self) -> int:
        return len(self.timestamps)

    @classmethod
    def from_model(cls, batch: TelemetryBatch) -> IncomingBatch:
        readings = batch.readings
        return cls(
            sensor_id=batch.sensor_id,
            run_id=batch.run_id,
            capture_session_id=batch.capture_session_id,
            timestamps=[r.timestamp for r in readings],  # UtcDatetime: already in UTC
            raw_values=[r.raw_value for r in readings],
            metas=[r.meta for r in readings],
        )

    def fingerprint(self) -> str:
        """A digest of what the batch means (not of its bytes): a retry that spells the same
        readings differently (key order, ``Z`` or ``+00:00``, ``20`` or ``20.0``) is the
        same batch, and either way in gives the same digest."""
        canonical = _ENCODER.encode(
            (
                str(self.sensor_id),
                str(self.run_id),
                str(self.capture_session_id),
                self.timestamps,
                self.raw_values,
                self.metas,
            )
        )
        return hashlib.sha256(canonical).hexdigest()


def decode_fast(raw: bytes) -> IncomingBatch | None:
    """The batch in ``raw``, or None when the wire model must judge it (any doubt at all)."""
    if len(raw) > 64 and _SUBMICRO.search(raw):
        return None
    try:
        batch = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    readings = batch.readings
    if len(readings) > MAX_READINGS_PER_BATCH:
        return None  # 413, with its message, from the slow path
    try:
        stamps = [r.timestamp.astimezone(UTC) for r in readings]
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        return None
    # No finiteness check here: msgspec refuses NaN/Infinity tokens and out-of-range numbers
    # (1e400) in raw_value and inside meta alike; the differential test holds it to that.
    return IncomingBatch(
        sensor_id=batch.sensor_id,
        run_id=batch.run_id,
        capture_session_id=batch.capture_session_id,
        timestamps=stamps,
        raw_values=[r.raw_value for r in readings],
        metas=[r.meta for r in readings],
    )
