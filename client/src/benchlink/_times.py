"""Times as the server speaks them: RFC 3339 with a zone, always read as UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def wire(value: Any) -> str:
    """A time for a query or a body: a datetime (or pandas Timestamp) with a zone, or RFC 3339
    text. A naive time is refused here, as the server would: which zone it means is a guess."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or RFC 3339 text, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone; give one (e.g. tzinfo=datetime.UTC)")
    return value.astimezone(UTC).isoformat()


def now() -> datetime:
    return datetime.now(UTC)
