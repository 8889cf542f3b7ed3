"""Idempotency-Key records, claimed once the route has authenticated its caller.

The middleware (:class:`cloud.middleware.IdempotencyMiddleware`) reads the key and the body
and, after the route, stores or releases the answer; the claim itself is made by the route's
authentication dependency (:func:`claim`), with the principal that route authenticated. A key
is therefore never looked up for a caller the route would refuse, and never under a
credential the route does not use (an unrelated ``Authorization`` header on a user route).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from cloud.container import container
from cloud.db.models import IdempotencyRecord
from cloud.db.uow import transaction
from cloud.errors import FieldError, IdempotencyInFlight, IdempotencyKeyReused, invalid
from cloud.settings import Settings

#: Where the middleware leaves the request's pending key for the route's authentication.
SCOPE_KEY = "benchlink.idempotency"
#: The document's bounds for the header (cloud.openapi); one place checks them.
KEY_LENGTH = range(1, 256)


def check_key(key: str | None) -> None:
    """Refuse an ``Idempotency-Key`` outside the documented length (422 naming the header)."""
    if key is not None and len(key) not in KEY_LENGTH:
        raise invalid("header.Idempotency-Key", "must be 1 to 255 characters")


@dataclass
class PendingKey:
    key: str
    fingerprint: str
    #: Set once claimed: the authenticated principal the key is stored under.
    principal: str | None = None


class Replay(Exception):
    """The stored answer for this key and principal; the middleware sends it."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__("idempotent replay")
        self.record = record


@dataclass
class _Claim:
    outcome: str  # proceed | replay | mismatch | in_flight
    record: IdempotencyRecord | None = None


class IdempotencyStore:
    """The records, in the database so that several API processes share them."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def claim(self, principal: str, key: str, fingerprint: str) -> _Claim:
        now = datetime.now(UTC)
        for _ in range(3):
            with transaction(self.sessions) as db:
                rec = db.get(IdempotencyRecord, (principal, key), with_for_update=True)
                if rec is not None and rec.expires_at <= now:
                    db.delete(rec)
                    db.flush()
                    rec = None
                if rec is None:
                    try:
                        with db.begin_nested():
                            db.add(
                                IdempotencyRecord(
                                    principal=principal,
                                    key=key,
                                    fingerprint=fingerprint,
                                    state="in_flight",
                                    locked_until=now
                                    + timedelta(seconds=self.settings.idempotency_lease_s),
                                    expires_at=now
                                    + timedelta(seconds=self.settings.idempotency_ttl_s),
                                )
                            )
                    except IntegrityError:
                        continue  # another process claimed it first: read its record
                    return _Claim("proceed")
                if rec.fingerprint != fingerprint:
                    return _Claim("mismatch")
                if rec.state == "done":
                    db.expunge(rec)
                    return _Claim("replay", rec)
                if rec.locked_until > now:
                    return _Claim("in_flight")
                # The process holding the claim died: take it over.
                rec.locked_until = now + timedelta(seconds=self.settings.idempotency_lease_s)
                return _Claim("proceed")
        return _Claim("in_flight")

    def complete(
        self, principal: str, key: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        kept = [
            [k.decode("latin-1"), v.decode("latin-1")]
            for k, v in headers
            if k.lower() in (b"content-type", b"location", b"retry-after")
        ]
        with transaction(self.sessions) as db:
            rec = db.get(IdempotencyRecord, (principal, key))
            if rec is not None:
                rec.state, rec.status_code = "done", status
                rec.response_headers, rec.response_body = kept, body

    def release(self, principal: str, key: str) -> None:
        with transaction(self.sessions) as db:
            db.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.principal == principal,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.state == "in_flight",
                )
            )

    def purge_expired(self) -> int:
        with transaction(self.sessions) as db:
            result = db.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= datetime.now(UTC))
            )
            return int(getattr(result, "rowcount", 0) or 0)


def claim(conn: HTTPConnection, principal: str) -> None:
    """Claim the request's Idempotency-Key (if any) for ``principal``, the caller the route
    has just authenticated. Raises :class:`Replay` with the stored answer, or the 409/422
    for a key in flight or reused with another body. Runs in the thread pool (sync deps)."""
    pending: PendingKey | None = conn.scope.get(SCOPE_KEY)
    if pending is None or pending.principal is not None:
        return
    store = container(conn).idempotency
    result = store.claim(principal, pending.key, pending.fingerprint)
    if result.outcome == "mismatch":
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request body or path",
            errors=[FieldError("header.Idempotency-Key", "already used for another request")],
        )
    if result.outcome == "in_flight":
        raise IdempotencyInFlight(
            "a request with this Idempotency-Key is still being processed; retry later",
            headers={"Retry-After": "1"},
        )
    if result.outcome == "replay":
        assert result.record is not None
        raise Replay(result.record)
    pending.principal = principal
