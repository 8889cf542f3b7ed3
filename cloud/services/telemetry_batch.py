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

from common.wire import MAX_META_DEPTH, MAX_READINGS_PER_BATCH, Reading, TelemetryBatch


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
#: Sorted keys: the same ``meta`` in another key order is the same batch.
_CANONICAL = msgspec.json.Encoder(order="sorted")
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
        readings differently (key order, inside ``meta`` too; ``Z`` or ``+00:00``; ``20`` or
        ``20.0``) is the same batch, and either way in gives the same digest.

        ``2:`` marks this form (62 hex digits, 248 bits, to fit the 64-character column);
        digests stored before it are 64 hex digits of :meth:`legacy_fingerprint`."""
        canonical = _CANONICAL.encode(
            (
                str(self.sensor_id),
                str(self.run_id),
                str(self.capture_session_id),
                self.timestamps,
                self.raw_values,
                self.metas,
            )
        )
        return "2:" + hashlib.sha256(canonical).hexdigest()[:62]

    def legacy_fingerprint(self) -> str:
        """The digest the first release stored: of the wire model's JSON dump. Only computed
        to recognise a batch stored under a key before the upgrade (a retry or ``replay``)."""
        model = TelemetryBatch(
            sensor_id=self.sensor_id,
            run_id=self.run_id,
            capture_session_id=self.capture_session_id,
            readings=[
                Reading(timestamp=t, raw_value=v, meta=m)
                for t, v, m in zip(self.timestamps, self.raw_values, self.metas, strict=True)
            ],
        )
        return hashlib.sha256(model.model_dump_json().encode()).hexdigest()

    def matches(self, stored: str | None) -> bool:
        """Whether a stored fingerprint is this batch's (None: stored without one)."""
        if stored is None:
            return True
        if stored.startswith("2:"):
            return stored == self.fingerprint()
        return stored == self.legacy_fingerprint()


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests more than ``limit`` containers deep (the value
    itself is level 1)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def decode_fast(raw: bytes) -> IncomingBatch | None:
    """The batch in ``raw``, or None when the wire model must judge it (any doubt at all)."""
    if len(raw) > 64 and _SUBMICRO.search(raw):
        return None
    try:
        batch = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    readings = batch.readings
    if len(readings) > MAX_READINGS_PER_BATCH:
        return None  # 413, with its message, from the slow path
    try:
        stamps = [r.timestamp.astimezone(UTC) for r in readings]
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        return None
    # No finiteness check here: msgspec refuses NaN/Infinity tokens and out-of-range numbers
    # (1e400) in raw_value and inside meta alike, and lone surrogates in strings; the
    # differential test holds it to that. Nesting it does not limit: a meta deeper than the
    # wire model allows is the wire model's to refuse, with its reason.
    if any(meta and _deeper_than(meta, MAX_META_DEPTH) for meta in (r.meta for r in readings)):
        return None
    return IncomingBatch(
        sensor_id=batch.sensor_id,
        run_id=batch.run_id,
        capture_session_id=batch.capture_session_id,
        timestamps=stamps,
        raw_values=[r.raw_value for r in readings],
        metas=[r.meta for r in readings],
    )
