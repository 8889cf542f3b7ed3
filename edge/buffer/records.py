"""What goes in and out of the buffer: readings, writes, their results, batches, dead letters,
and the forms a reading is stored in (:func:`ts_text`, :func:`meta_text`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from common.reading import meta_text
from edge.buffer.inbox import Delivery

#: batch states
PENDING, INFLIGHT, SYNCED, DEAD = "pending", "inflight", "synced", "dead"


class BufferFull(Exception):
    """The disk budget (``buffer.max_bytes``) is reached, or the buffer's filesystem has no
    more room than the reserve kept for sync and cleanup (``buffer.min_free_bytes``): new
    readings are refused. ``cause`` says which; for ``"disk"``, ``room`` is what the buffer
    could still write (free on the filesystem plus its own free pages) and ``reserve`` the
    floor."""

    def __init__(
        self, used: int, limit: int, *, room: int | None = None, reserve: int | None = None
    ) -> None:
        self.used, self.limit = used, limit
        self.room, self.reserve = room, reserve
        self.cause: Literal["budget", "disk"] = "budget" if room is None else "disk"
        if room is None:
            text = f"buffer full: {used} of {limit} bytes used by unsynced data"
        else:
            text = (
                f"disk full: {room} bytes left for the buffer on its filesystem, below the"
                f" {reserve} bytes kept free (buffer.min_free_bytes)"
            )
        super().__init__(text)


@dataclass(frozen=True)
class NewReading:
    sensor_id: str
    timestamp: datetime
    raw_value: float
    meta: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewFault:
    """A device fault of one sensor (an open or shorted probe): no value, so not a reading.
    Consecutive faults of one kind are one episode, named by the source at its first fault
    (:mod:`edge.buffer.faults`); this is the part of it seen since the last commit."""

    sensor_id: str
    episode: str
    kind: str
    first_ts: datetime
    last_ts: datetime
    count: int = 1
    #: the decoder's description of the fault (the device's own line for text protocols)
    detail: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    kind: str  # mqtt_payload | serial | batch | reading | write
    reason: str
    sensor_id: str | None = None
    origin: str | None = None  # topic or port
    payload: str | None = None
    batch_id: str | None = None


@dataclass
class Write:
    """One unit a source hands to the writer; acked (future resolved) after the commit."""

    readings: list[NewReading] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: which source wrote it; a source whose write was refused (buffer full) gets nothing
    #: more committed until it re-submits the refused write (see :class:`edge.writer.Writer`)
    source: str = ""
    #: a message of an at-least-once delivery (MQTT): the inbox drops its redelivered copy
    delivery: Delivery | None = None
    #: device faults seen with these readings, committed in the same transaction (a tuple
    #: by default: nothing allocated for the writes of every other reading)
    faults: Sequence[NewFault] = ()


@dataclass(frozen=True)
class WriteResult:
    committed: int  # readings
    dead: int
    duplicate: bool = False  # a redelivery of a message already committed


@dataclass(frozen=True)
class Batch:
    seq: int
    id: str
    sensor_id: str
    run_id: str
    capture_session_id: str
    state: str
    count: int
    attempts: int


def ts_text(ts: datetime) -> str:
    """UTC, fixed width, so that text order is time order (``replay --since`` compares text).

    ValueError for a naive timestamp or one that leaves the datetime range once in UTC
    (``9999-12-31T23:59:59-14:00``). The year is zero-padded by hand: ``strftime("%Y")``
    writes year 999 as ``999`` on glibc, which is neither RFC 3339 nor sortable."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("naive timestamp")
    try:
        u = ts.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range once converted to UTC") from None
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}+00:00"
    )


def reading_row_values(r: NewReading) -> tuple[str, float, str | None]:
    """(ts, raw_value, meta) as stored, or ValueError naming why the reading cannot be sent."""
    if not isinstance(r.raw_value, int | float) or not math.isfinite(r.raw_value):
        raise ValueError(f"raw_value: not a finite number: {r.raw_value!r}"[:200])
    return ts_text(r.timestamp), float(r.raw_value), meta_text(r.meta)


def show(r: NewReading) -> str:
    """A reading as text for the dead-letter table (never raises: ``str`` of an integer over
    4,300 digits does)."""
    try:
        text = f"timestamp={r.timestamp!r} raw_value={r.raw_value!r} meta={r.meta!r}"
    except ValueError:
        text = f"timestamp={r.timestamp!r} (value or meta cannot be printed)"
    return text[:4096]
