"""Bearer tokens of the things that call the API on their own: sensors and edges.

One pattern for both: 32 random bytes shown once, only a SHA-256 kept (256 random bits leave
nothing to brute-force, and a fast hash keeps every authenticated request cheap), a preview
safe to show, rotate (the old token stops at once) and revoke (no token at all).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import models
from cloud.db.uow import read_only


class HoldsToken(Protocol):
    """A row with the token columns (:class:`cloud.db.models.TokenColumns`)."""

    token_hash: str | None
    token_preview: str | None
    token_status: str
    token_issued_at: datetime | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def new_token(prefix: str) -> tuple[str, str, str]:
    """(token, its hash, a preview safe to show). 32 random bytes = 256 bits; the prefix
    says whose token it is (``bls_`` a sensor's, ``ble_`` an edge's) when one turns up in a
    config file or a leak report."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_token(token), f"{token[:8]}…{token[-4:]}"


def issue(row: HoldsToken, prefix: str) -> str:
    """Give ``row`` a new token (any earlier one stops working); return it, for this answer
    only."""
    token, token_hash, preview = new_token(prefix)
    row.token_hash, row.token_preview = token_hash, preview
    row.token_status, row.token_issued_at = "active", datetime.now(UTC)
    return token


def revoke(row: HoldsToken) -> None:
    row.token_hash = None
    row.token_status = "revoked"


class TokenGate:
    """Whether a Bearer token is some sensor's (or, with ``tables``, some edge's too), asked
    before a telemetry body is read, so that an unauthenticated sender costs one indexed
    lookup and never a body read or parse.

    A token found is remembered for ``ttl_s``, which spares each batch of a sending sensor a
    round trip. The gate only keeps strangers out: ingest authenticates every batch again in
    its own transaction, so a token revoked within ``ttl_s`` still has its batch refused."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl_s: float = 30.0,
        size: int = 4096,
        tables: Sequence[Any] = (models.Sensor,),
    ):
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.size = size
        self.tables = tuple(tables)
        self._seen: dict[str, float] = {}  # token hash -> when the lookup expires (monotonic)

    def remembered(self, token_hash: str) -> bool:
        until = self._seen.get(token_hash)
        return until is not None and until > time.monotonic()

    def lookup(self, token_hash: str) -> bool:
        """Ask the database (blocking: call from a worker thread)."""
        with read_only(self.sessions) as db:
            found = any(
                db.scalar(select(t.id).where(t.token_hash == token_hash)) is not None
                for t in self.tables
            )
        if found:
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[token_hash] = time.monotonic() + self.ttl_s
        return found
