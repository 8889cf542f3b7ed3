"""Opaque keyset cursors: base64 of the last item's sort key, so pages never shift.

A cursor comes back from the client, so it is parsed as untrusted input: every part is
checked against the type the query needs, and anything else is a 422 on ``cursor``.

A :class:`Keyset` also writes the name of its list into each cursor: two lists ordered by
the same kind of key (``created_at``, ``id``) would otherwise take each other's cursors and
silently start somewhere meaningless.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_
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


def int32(value: Any) -> int:
    # For INTEGER columns: PostgreSQL refuses a larger parameter instead of comparing it.
    number = int64(value)
    if not -(2**31) <= number < 2**31:
        raise ValueError("not a 32-bit integer")
    return number


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def uid(value: Any) -> uuid.UUID:
    # uuid.UUID(1) raises AttributeError, which would escape as a 500: take strings only.
    return uuid.UUID(text(value))


def decode(
    cursor: str | None, *parts: Callable[[Any], Any], kind: str | None = None
) -> list[Any] | None:
    """The key inside ``cursor``, each part converted by its parser; None for no cursor.
    With ``kind``, the cursor must have been written for that list (see :class:`Keyset`)."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
        if not isinstance(key, list):
            raise ValueError("wrong shape")
        if kind is not None:
            if not key or key[0] != kind:
                raise ValueError("a cursor of another list")
            key = key[1:]
        if len(key) != len(parts):
            raise ValueError("wrong shape")
        return [parse(value) for parse, value in zip(parts, key, strict=True)]
    except (ValueError, TypeError, OverflowError, RecursionError):
        # RecursionError: deeply nested JSON ("[[[[..."), which json.loads gives up on.
        raise invalid("cursor", "not a cursor returned by this list") from None


@dataclass(frozen=True)
class Keyset:
    """How one list is ordered, and what its cursors hold.

    ``columns`` must be unique together within the query's rows (end with the primary key,
    or a column unique under the query's filter), or items would be skipped or repeated at
    a page boundary. ``key`` gives an item's values of those columns as the cursor keeps them
    (datetimes in ISO form); ``parsers`` read them back. All columns sort the same way.
    """

    kind: str
    columns: tuple[Any, ...]
    parsers: tuple[Callable[[Any], Any], ...]
    key: Callable[[Any], tuple[Any, ...]]
    descending: bool = False

    def _after(self, values: Sequence[Any]) -> ColumnElement[bool]:
        # (a, b) > (x, y) expanded into a > x OR (a = x AND b > y): the spelling every
        # database and SQLAlchemy version takes the same way.
        terms = []
        for i, (column, value) in enumerate(zip(self.columns, values, strict=True)):
            beyond = column < value if self.descending else column > value
            ties = [c == v for c, v in zip(self.columns[:i], values[:i], strict=True)]
            terms.append(and_(*ties, beyond))
        return or_(*terms)

    def page(
        self, db: Session, query: Select[*tuple[Any, ...]], limit: int, cursor: str | None
    ) -> tuple[list[Any], str | None]:
        """One page of ``query`` (entities, or rows when it selects several) and the cursor
        of the next one, None on the last page."""
        values = decode(cursor, *self.parsers, kind=self.kind)
        if values is not None:
            query = query.where(self._after(values))
        order = [c.desc() if self.descending else c.asc() for c in self.columns]
        query = query.order_by(*order).limit(limit + 1)
        rows: list[Any] = (
            list(db.scalars(query))
            if len(query.column_descriptions) == 1
            else list(db.execute(query).all())
        )
        if len(rows) <= limit:
            return rows, None
        return rows[:limit], encode(self.kind, *self.key(rows[limit - 1]))


def newest_first(
    db: Session,
    query: Select[Any],
    model: Any,
    limit: int,
    cursor: str | None,
    *,
    kind: str | None = None,
) -> tuple[Sequence[Any], str | None]:
    """One page of ``query`` ordered by (created_at, id) descending, and the next cursor.
    Cursors name the list: ``kind``, by default the model's table."""
    keyset = Keyset(
        kind or model.__tablename__,
        (model.created_at, model.id),
        (aware_datetime, uid),
        lambda row: (row.created_at.isoformat(), row.id),
        descending=True,
    )
    return keyset.page(db, query, limit, cursor)
