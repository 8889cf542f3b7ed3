"""The reading contract: one sensor's readings for one capture session, as columns.

On the wire (``POST /api/v1/telemetry``) a batch is a JSON object, :class:`WireBatch`: the
sensor, run and capture session, then ``readings``, each a ``timestamp`` (RFC 3339 text with
a zone), a finite ``raw_value`` and an optional ``meta`` object. Everywhere else it is a
:class:`ReadingBatch`, the same readings as three columns with every timestamp in UTC:
:func:`decode` makes one from a body in one msgspec pass, and that is the validation.

:mod:`common.wire` holds the pydantic twin of :class:`WireBatch`, which the OpenAPI document
shows and which words every refusal; ``tests/cloud/test_telemetry_decode.py`` holds the two
to the same definition (same fields, and whatever :func:`decode` accepts the twin accepts
with the same values).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

#: Most readings one telemetry request may carry; more is answered with 413.
MAX_READINGS_PER_BATCH = 10_000
#: Most bytes one telemetry request body may have; more is answered with 413.
MAX_TELEMETRY_BODY_BYTES = 8 * 1024 * 1024
#: Path of the ingest endpoint, relative to the cloud's base URL.
TELEMETRY_PATH = "/api/v1/telemetry"
#: Deepest nesting of containers in a reading's ``meta`` (the object itself is level 1):
#: far more than any instrument needs, and well inside what every parser and serializer on
#: the way (msgspec, pydantic, PostgreSQL's jsonb) handles, so what is stored reads back.
MAX_META_DEPTH = 32

#: Compact JSON: the live stream's events and a reading's ``meta`` in a COPY are encoded
#: with it.
ENCODER = msgspec.json.Encoder()
#: Sorted keys: the same ``meta`` in another key order is the same batch.
_CANONICAL = msgspec.json.Encoder(order="sorted")


# gc=False: these never take part in a reference cycle (JSON values only), and a thousand
# GC-tracked objects per batch make the collector run often on the ingest path.
class WireReading(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One reading as sent. A naive timestamp is refused: from a bench PC it is ambiguous
    by hours (and a bare number could be seconds or milliseconds since anything)."""

    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    raw_value: float  # msgspec refuses NaN/Infinity tokens and out-of-range numbers
    meta: dict[str, Any] | None = None


class WireSeq(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The edge's sequence numbers of a batch's readings (optional: see :func:`seq_problem`)."""

    epoch: uuid.UUID
    ranges: list[tuple[int, int]]


class WireBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A batch as sent: one sensor's readings for one capture session of one run."""

    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    readings: Annotated[list[WireReading], msgspec.Meta(min_length=1)]
    seq: WireSeq | None = None


#: highest sequence number accepted (the cloud stores them as 64-bit integers)
MAX_SEQ = 2**62


def to_ranges(numbers: Iterable[int]) -> list[list[int]]:
    """Ascending numbers as ``[first, last]`` ranges of consecutive ones (the edge's batch
    body and the cloud's stored ranges say the same numbers the same way)."""
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def seq_problem(ranges: list[tuple[int, int]], n: int) -> str | None:
    """Why a batch's ``seq.ranges`` cannot describe its ``n`` readings, or None. The ranges
    number the readings in order (the first range's first number is the first reading's), so
    they must be ascending, disjoint, from 1 on, and hold exactly ``n`` numbers."""
    if not ranges:
        return "at least one [first, last] range"
    total, prev = 0, 0
    for first, last in ranges:
        if not 1 <= first <= last <= MAX_SEQ:
            return f"each range is [first, last] with 1 <= first <= last <= {MAX_SEQ}"
        if first <= prev:
            return "ranges must be ascending and disjoint"
        total += last - first + 1
        prev = last
    if total != n:
        return f"the ranges hold {total} numbers for {n} readings"
    return None


class ReadingBatch(msgspec.Struct, frozen=True, gc=False):
    """One sensor's readings for one capture session, validated, timestamps in UTC."""

    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    timestamps: list[datetime]
    raw_values: list[float]
    metas: list[dict[str, Any] | None]
    #: the edge's sequence numbers of the readings: its epoch (the edge buffer's id) and the
    #: ascending ranges numbering the readings in order; None for a batch sent without
    seq_epoch: uuid.UUID | None = None
    seq_ranges: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.timestamps)

    def fingerprint(self) -> str:
        """A digest of what the batch means (not of its bytes): a retry that spells the same
        readings differently (key order, inside ``meta`` too; ``Z`` or ``+00:00``; ``20`` or
        ``20.0``) is the same batch.

        ``2:`` marks this form (62 hex digits, 248 bits, to fit the 64-character column);
        digests without it are of :func:`common.wire.legacy_fingerprint`."""
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


_DECODER = msgspec.json.Decoder(WireBatch)
#: Seconds with more than six fractional digits: msgspec rounds them to the microsecond
#: where the contract truncates, so :func:`decode` leaves such a body to the contract.
#: Fraction digits then a zone: no JSON number looks like that, and the leading literal
#: keeps the scan cheap (a pattern starting with \\d is ten times slower). A match inside
#: a meta string only sends the body the contract's way.
_SUBMICRO = re.compile(rb"\.\d{7,}[Zz+-]")


def _wire(raw: bytes) -> WireBatch | None:
    """``raw`` as msgspec reads it, or None (see :func:`decode`)."""
    if len(raw) > 64 and _SUBMICRO.search(raw):
        return None
    try:
        batch = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if len(batch.readings) > MAX_READINGS_PER_BATCH:
        return None  # 413, with its message
    return batch


def decode(raw: bytes) -> ReadingBatch | None:
    """The batch in ``raw``, or None when :mod:`common.wire` must judge it: every refusal
    (it words the reasons) and the lax spellings the contract also takes (``"2.5"`` for a
    number, a timestamp that is before year 1 once in UTC, sub-microsecond digits)."""
    batch = _wire(raw)
    if batch is None:
        return None
    readings = batch.readings
    try:
        stamps = [r.timestamp.astimezone(UTC) for r in readings]
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        return None
    metas = [r.meta for r in readings]
    if any(meta and meta_problem(meta) for meta in metas):
        return None
    seq = batch.seq
    if seq is not None and seq_problem(seq.ranges, len(readings)):
        return None  # the contract words it
    return ReadingBatch(
        sensor_id=batch.sensor_id,
        run_id=batch.run_id,
        capture_session_id=batch.capture_session_id,
        timestamps=stamps,
        raw_values=[r.raw_value for r in readings],
        metas=metas,
        seq_epoch=None if seq is None else seq.epoch,
        seq_ranges=None if seq is None else seq.ranges,
    )


def meta_problem(meta: dict[str, Any]) -> str | None:
    """Why the cloud refuses a reading's ``meta``, or None: a number that is not finite
    (Python's json reads NaN; PostgreSQL does not), text that is not valid Unicode, or
    containers nested deeper than :data:`MAX_META_DEPTH`. The one check of ``meta``: the
    contract, :func:`decode` and the edge's buffer all call it."""
    stack: list[tuple[Any, int]] = [(meta, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "NaN and Infinity are not JSON numbers and are not accepted"
        if isinstance(item, dict | list):
            if depth > MAX_META_DEPTH:
                return f"nested deeper than {MAX_META_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:  # "\ud800": JSON can spell it, no database can store it
                return "text must be valid Unicode (a lone surrogate is not)"
    return None


def meta_text(meta: dict[str, Any] | None) -> str | None:
    """``meta`` as compact JSON text (as the edge stores and sends it); ValueError saying why
    for what the cloud would refuse or what is no JSON at all (a set, an integer over
    Python's 4,300 digits)."""
    if meta is None:
        return None
    problem = meta_problem(meta)
    if problem is not None:
        raise ValueError(f"meta: {problem}")
    try:
        return json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN inside a tuple, which the check does not walk
        if "Out of range float" in str(exc):
            raise ValueError("meta: NaN and Infinity are not JSON numbers") from None
        raise ValueError(f"meta: {str(exc)[:200]}") from None
    except TypeError as exc:
        raise ValueError(f"meta: {type(exc).__name__}: {str(exc)[:200]}") from None
