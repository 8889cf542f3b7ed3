"""Apply Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from cloud.settings import normalize_database_url

HERE = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from cloud.db.engine import make_engine
    from cloud.db.uow import read_connection

    engine = make_engine(database_url)
    try:
        with read_connection(engine) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@cache
def head_revisions() -> frozenset[str]:
    """The revisions this code expects the database to be at (read once per process)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def behind_head(database_url: str) -> str | None:
    """Why this code cannot serve the database as it is (its schema not at head), or None:
    at head, or not reachable now (the server starts anyway; ``/readyz`` says so)."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.db.engine import make_engine
    from cloud.db.uow import read_connection

    engine = make_engine(database_url)
    try:
        with read_connection(engine) as conn:
            found = current_revisions(conn)
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return schema_gap(found)


def schema_gap(found: frozenset[str]) -> str | None:
    """How a schema at revisions ``found`` differs from this version's, or None (at head)."""
    heads = head_revisions()
    if found == heads:
        return None
    return (
        f"the database schema is at {shown_revisions(found)}, "
        f"this version needs {', '.join(sorted(heads))}"
    )


def shown_revisions(found: frozenset[str]) -> str:
    return ", ".join(sorted(found)) or "none (never migrated)"


def current_revisions(conn: Connection) -> frozenset[str]:
    from alembic.runtime.migration import MigrationContext

    return frozenset(MigrationContext.configure(conn).get_current_heads())
