"""The declarative base of every table, and what tables share: the constraint naming
convention, integer keys that autoincrement on both databases, timestamps, token columns."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cloud.db.types import UTCDateTime

# SQLite only autoincrements INTEGER PRIMARY KEY; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TokenColumns:
    """The token of a thing that calls the API on its own (:mod:`cloud.services.tokens`)."""

    #: SHA-256 of the current token; NULL once revoked. Tokens carry 256 random bits, so a
    #: fast hash is enough: there is nothing to brute-force, and ingest must stay cheap.
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_preview: Mapped[str | None] = mapped_column(String(32))
    token_status: Mapped[str] = mapped_column(String(16), default="active")
    token_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
