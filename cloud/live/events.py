"""What a live stream carries: batch headers, the events made of them, their ids, and the
filter that says which a client gets.

An event id is ``"<batch_id>-<index in batch>"`` (the same in every process), or ``"p<n>"``
for a commit position (:func:`position_id`), a resume point before any reading."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import msgspec

from cloud.services.telemetry import IngestedBatch
from cloud.store.telemetry.base import LiveRow, StoredBatch
from cloud.utctime import isoformat_many
from common.reading import ENCODER

#: One reading as delivered: (timestamp ISO 8601 UTC, raw_value, value, late).
Row = LiveRow


@dataclass(frozen=True)
class BatchHeader:
    """What is common to every reading of a stored batch, and where to find its rows."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    unit: str
    profile_version: str
    count: int
    first_ts: datetime
    last_ts: datetime
    #: Commit position (:mod:`cloud.live.positions`); None where it is not known.
    position: int | None = None

    @cached_property
    def ids(self) -> tuple[str, str, str]:
        """The sensor, run and session ids as text, made once per batch."""
        return str(self.sensor_id), str(self.run_id), str(self.capture_session_id)

    @classmethod
    def of(cls, batch: IngestedBatch, position: int | None = None) -> BatchHeader:
        return cls(
            batch_id=batch.batch_id,
            project_id=batch.project_id,
            sensor_id=batch.sensor_id,
            run_id=batch.run_id,
            capture_session_id=batch.capture_session_id,
            unit=batch.display_unit,
            profile_version=batch.profile_version,
            count=len(batch.rows),
            first_ts=batch.first_ts,
            last_ts=batch.last_ts,
            position=position,
        )


def live_rows(batch: StoredBatch) -> list[Row]:
    """The delivered form of a stored batch (the same as :mod:`cloud.live.store` reads back),
    the timestamps from their microseconds (a fifth of ``isoformat``'s cost)."""
    late = batch.late
    return [
        (ts, float(raw), float(value), late)
        for ts, raw, value in zip(
            isoformat_many(batch.stamps_us), batch.raw_values, batch.values, strict=True
        )
    ]


class Message(msgspec.Struct, gc=False):
    """One reading as a client gets it (``type`` first, as clients read it)."""

    type: str
    id: str
    batch_id: int
    sensor_id: str
    run_id: str
    capture_session_id: str
    timestamp: str
    raw_value: float
    value: float
    unit: str
    late: bool
    profile_version: str
    #: The commit position of its batch (:mod:`cloud.live.positions`): a client that read a
    #: history with ``live=true`` drops the readings at or before that history's ``live_from``.
    position: int | None


class LiveEvent:
    """One reading as clients see it; encoded to JSON once, however many clients get it."""

    __slots__ = ("_json", "header", "index", "row")
    #: The SSE event name.
    event = "reading"

    def __init__(self, header: BatchHeader, index: int, row: Row) -> None:
        self.header = header
        self.index = index
        self.row = row
        self._json: str | None = None

    @property
    def id(self) -> str:
        """``<batch_id>-<index in batch>``: the same in every process."""
        return f"{self.header.batch_id}-{self.index}"

    def message(self) -> Message:
        h, (ts, raw, value, late) = self.header, self.row
        sensor, run, session = h.ids
        return Message(
            "reading", self.id, h.batch_id, sensor, run, session, ts, raw, value, h.unit, late,
            h.profile_version, h.position,
        )  # fmt: skip

    @property
    def is_reading(self) -> bool:
        return True

    @property
    def json(self) -> str:
        """``message()`` as compact JSON, encoded once however many clients get it."""
        if self._json is None:
            self._json = ENCODER.encode(self.message()).decode()
        return self._json


class AlarmNotice(LiveEvent):
    """An alarm transition (:func:`cloud.services.alarms.live_message`): delivered between
    readings to the subscribers whose filter matches its sensor, run and session. It has no
    event id: a client resumes after the last reading it saw, and an alarm missed while it was
    away is in ``GET /alarms``."""

    __slots__ = ()
    event = "alarm"

    def __init__(self, message: dict[str, Any]) -> None:
        raised = datetime.fromisoformat(message["raised_at"])
        scope = BatchHeader(
            batch_id=-1,
            project_id=uuid.UUID(message["project_id"]),
            sensor_id=uuid.UUID(message["sensor_id"]),
            run_id=uuid.UUID(message["run_id"]) if message.get("run_id") else uuid.UUID(int=0),
            capture_session_id=uuid.UUID(message["capture_session_id"])
            if message.get("capture_session_id")
            else uuid.UUID(int=0),
            unit="",
            profile_version="",
            count=0,
            first_ts=raised,
            last_ts=raised,
        )
        super().__init__(scope, 0, ("", 0.0, 0.0, False))
        self._json = json.dumps(message, separators=(",", ":"))

    @property
    def id(self) -> str:
        return ""

    @property
    def is_reading(self) -> bool:
        return False


def events(header: BatchHeader, rows: Sequence[Row], start: int = 0) -> list[LiveEvent]:
    """Events of ``rows[start:]`` of one batch."""
    return [LiveEvent(header, i, rows[i]) for i in range(start, len(rows))]


def parse_event_id(event_id: str) -> tuple[int, int] | None:
    batch, sep, index = event_id.partition("-")
    try:
        return (int(batch), int(index)) if sep else None
    except ValueError:
        return None


def position_id(position: int) -> str:
    """The event id of a commit position: a resume point before any reading (``p<n>``)."""
    return f"p{position}"


def parse_position(event_id: str) -> int | None:
    """The commit position of a :func:`position_id`, else None."""
    digits = event_id[1:]
    ok = event_id[:1] == "p" and digits.isascii() and digits.isdigit()
    return int(digits) if ok else None


@dataclass(frozen=True)
class StreamFilter:
    """Which readings a client gets: all given ids must match, within one project."""

    project_id: uuid.UUID
    sensor_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    capture_session_id: uuid.UUID | None = None

    def matches(self, h: BatchHeader) -> bool:
        return (
            h.project_id == self.project_id
            and (self.sensor_id is None or h.sensor_id == self.sensor_id)
            and (self.run_id is None or h.run_id == self.run_id)
            and (self.capture_session_id is None or h.capture_session_id == self.capture_session_id)
        )
