"""The database Alembic builds is the one the models describe, on both databases: a migration
that forgets a column, an index or a constraint of its model fails here, not in production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from cloud.db.models import Base


def test_migrations_build_what_the_models_say(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()
