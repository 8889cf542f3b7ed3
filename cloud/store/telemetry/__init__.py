"""Where readings are written and read: :class:`~cloud.store.telemetry.base.TelemetryStore`
on PostgreSQL or SQLite, chosen here and nowhere else."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cloud.store.telemetry.base import TelemetryStore
from cloud.store.telemetry.postgres import PostgresStore
from cloud.store.telemetry.sqlite import SqliteStore


def telemetry_store(db: Session) -> TelemetryStore:
    """The store for the database behind this session (in its transaction)."""
    if db.get_bind().dialect.name == "postgresql":
        return PostgresStore(db)
    return SqliteStore(db)
