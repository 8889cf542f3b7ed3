"""The generic line protocols: ``value``, ``csv`` and ``jsonl``."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from hardware.protocols import Fault, Sample
from hardware.protocols._framing import LineDecoder, Skip, parse_number


def parse_timestamp(value: object) -> datetime:
    """An aware UTC datetime from RFC 3339 text (with a zone) or epoch seconds; else Skip."""
    if isinstance(value, bool):
        raise Skip(f"timestamp must be RFC 3339 text or epoch seconds, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = parse_number(text, "timestamp")
        except Skip:
            return _parse_rfc3339(text)
    else:
        raise Skip(f"timestamp must be RFC 3339 text or epoch seconds, not {value!r}")
    if not math.isfinite(seconds):
        raise Skip(f"timestamp is not finite: {seconds}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Skip(f"timestamp {seconds} is out of range") from None


def _parse_rfc3339(text: str) -> datetime:
    # fromisoformat also takes dates alone and other ISO shapes; RFC 3339 needs the time.
    if len(text) < 16 or text[10] not in "Tt ":
        raise Skip(f"timestamp is not RFC 3339: {text[:40]!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise Skip(f"timestamp is not RFC 3339: {text[:40]!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise Skip(f"timestamp has no time zone: {text[:40]!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise Skip(f"timestamp is out of range: {text[:40]!r}") from None


class ValueDecoder(LineDecoder):
    """One finite number per line."""

    def handle_line(self, text: str) -> list[Sample | Fault]:
        return [Sample(parse_number(text))]


class CsvDecoder(LineDecoder):
    """``channel,value[,timestamp]``."""

    def handle_line(self, text: str) -> list[Sample | Fault]:
        fields = [f.strip() for f in text.split(",")]
        if len(fields) not in (2, 3):
            raise Skip(f"expected channel,value[,timestamp], got {len(fields)} fields")
        channel = fields[0]
        if not channel:
            raise Skip("empty channel")
        value = parse_number(fields[1])
        timestamp = parse_timestamp(fields[2]) if len(fields) == 3 else None
        return [Sample(value, channel=channel, timestamp=timestamp)]


class JsonLinesDecoder(LineDecoder):
    """``{"value"|"raw_value": n, "timestamp"?: ..., "channel"?: ..., "meta"?: {...}}``."""

    def handle_line(self, text: str) -> list[Sample | Fault]:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            raise Skip("line is not JSON") from None
        if not isinstance(obj, dict):
            raise Skip(f"expected a JSON object, got {type(obj).__name__}")
        if ("value" in obj) == ("raw_value" in obj):
            raise Skip('expected exactly one of "value" and "raw_value"')
        value = _finite_number(obj["value"] if "value" in obj else obj["raw_value"])
        timestamp = parse_timestamp(obj["timestamp"]) if obj.get("timestamp") is not None else None
        channel = _channel(obj.get("channel"))
        meta = obj.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise Skip(f'"meta" must be an object, not {type(meta).__name__}')
        return [Sample(value, channel=channel, timestamp=timestamp, meta=meta)]


def _finite_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Skip(f"value must be a number, not {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        raise Skip("value is too large") from None
    if not math.isfinite(number):
        raise Skip(f"value is not finite: {number}")
    return number


def _channel(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Skip(f'"channel" must be text or an integer, not {value!r:.40}')
    return str(value)
