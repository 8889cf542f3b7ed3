"""MQTT payloads to readings: a JSON reading, a JSON list of readings, or a bare number."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from common.wire import Reading
from edge.buffer import NewReading, reading_row_values


class PayloadError(ValueError):
    pass


def parse_payload(payload: bytes, sensor_id: str, now: datetime) -> list[NewReading]:
    """A JSON reading, a JSON list of readings, or a bare number -> readings (or PayloadError)."""
    if payload[:1] == b"{":
        # Fast path for the usual device payload, one complete reading: pydantic parses and
        # validates it in one pass. Anything else it refuses takes the general path below,
        # which also gives the precise reason.
        try:
            reading = Reading.model_validate_json(payload)
        except (ValidationError, ValueError, RecursionError):
            pass
        else:
            first = NewReading(sensor_id, reading.timestamp, reading.raw_value, reading.meta)
            return [_checked(first, 0)]
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("not JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer over 4,300 digits
        raise PayloadError(f"not JSON: {str(exc)[:200]}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PayloadError("empty list")
    # Readings without a timestamp get ``now``, one microsecond apart: the cloud keeps one
    # reading per sensor and timestamp, so two must never share an arrival time.
    step = timedelta(microseconds=1)
    return [_one(item, i, sensor_id, now + i * step) for i, item in enumerate(items)]


def _one(item: Any, index: int, sensor_id: str, now: datetime) -> NewReading:
    where = f"[{index}] " if index else ""
    if isinstance(item, bool) or not isinstance(item, int | float | dict):
        raise PayloadError(f"{where}a reading is an object or a number, not {type(item).__name__}")
    if not isinstance(item, dict):
        item = {"raw_value": item}
    item = dict(item)
    if "value" in item and "raw_value" not in item:
        item["raw_value"] = item.pop("value")
    item.setdefault("timestamp", now.isoformat())
    raw = item.get("raw_value")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise PayloadError(f"{where}raw_value: non-finite number {raw}")
    try:
        reading = Reading.model_validate(item)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise PayloadError(f"{where}{reasons}") from None
    new = NewReading(sensor_id, reading.timestamp, reading.raw_value, reading.meta)
    return _checked(new, index)


def json_object(payload: Any) -> dict[str, Any]:
    try:
        data = json.loads(bytes(payload or b""))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _checked(reading: NewReading, index: int) -> NewReading:
    """Refuse here what the buffer could not store or the cloud would refuse (422 for a whole
    batch): NaN/Infinity inside meta, a timestamp out of range, an integer too long to print."""
    try:
        reading_row_values(reading)
    except ValueError as exc:
        raise PayloadError(f"{f'[{index}] ' if index else ''}{exc}") from None
    return reading
