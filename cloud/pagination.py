"""Opaque keyset cursors: base64 of the last item's sort key, so pages never shift."""

from __future__ import annotations

import base64
import json
from typing import Any

from cloud.errors import invalid


def encode(*key: Any) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, arity: int) -> list[Any] | None:
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        raise invalid("cursor", "not a cursor returned by this API") from None
    if not isinstance(key, list) or len(key) != arity:
        raise invalid("cursor", "not a cursor returned by this API")
    return key
