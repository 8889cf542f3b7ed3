"""Wire models of `POST /api/v1/telemetry`, used by the edge to send and the cloud to accept.

Floats are finite (``allow_inf_nan=False``) and a reading's timestamp is RFC 3339 text with a
zone: a naive timestamp from a bench PC is ambiguous by hours and a bare number could be
seconds or milliseconds since anything, so both are rejected rather than guessed.
"""

from __future__ import annotations

import math
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
)

#: Most readings one telemetry request may carry; more is answered with 413.
MAX_READINGS_PER_BATCH = 10_000
#: Most bytes one telemetry request body may have; more is answered with 413.
MAX_TELEMETRY_BODY_BYTES = 8 * 1024 * 1024
#: Path of the ingest endpoint, relative to the cloud's base URL.
TELEMETRY_PATH = "/api/v1/telemetry"


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


#: Deepest nesting of containers in a reading's ``meta`` (the object itself is level 1):
#: far more than any instrument needs, and well inside what every parser and serializer on
#: the way (msgspec, pydantic, PostgreSQL's jsonb) handles, so what is stored reads back.
MAX_META_DEPTH = 32


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and Infinity are not JSON numbers and are not accepted")
        if isinstance(item, dict | list):
            if depth > MAX_META_DEPTH:
                raise ValueError(f"nested deeper than {MAX_META_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:  # "\ud800": JSON can spell it, no database can store it
                raise ValueError("text must be valid Unicode (a lone surrogate is not)") from None
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


class TelemetryBatch(WireModel):
    sensor_id: UUID
    run_id: UUID
    capture_session_id: UUID
    readings: list[Reading] = Field(min_length=1)


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
