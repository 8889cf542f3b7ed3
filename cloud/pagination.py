"""Opaque keyset cursors: base64 of the last item's sort key, so pages never shift.

A cursor comes back from the client, so it is parsed as untrusted input: every part is
checked against the type the query needs, and anything else is a 422 on ``cursor``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from cloud.errors import invalid

INT64 = 2**63 - 1


def encode(*key: Any) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def aware_datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("naive")
    return parsed


def int64(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -INT64 <= value <= INT64:
        raise ValueError("not a 64-bit integer")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def decode(cursor: str | None, *parts: Callable[[Any], Any]) -> list[Any] | None:
    """The key inside ``cursor``, each part converted by its parser; None for no cursor."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
        if not isinstance(key, list) or len(key) != len(parts):
            raise ValueError("wrong shape")
        return [parse(value) for parse, value in zip(parts, key, strict=True)]
    except (ValueError, TypeError, OverflowError):
        raise invalid("cursor", "not a cursor returned by this API") from None


def newest_first(
    db: Session, query: Select[Any], model: Any, limit: int, cursor: str | None
) -> tuple[Sequence[Any], str | None]:
    """One page of ``query`` ordered by (created_at, id) descending, and the next cursor."""
    key = decode(cursor, aware_datetime, uuid.UUID)
    if key is not None:
        created, last_id = key
        query = query.where(
            or_(model.created_at < created, and_(model.created_at == created, model.id < last_id))
        )
    rows = list(
        db.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1))
    )
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode(last.created_at.isoformat(), last.id)
