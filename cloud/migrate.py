"""Apply Alembic migrations programmatically (no alembic.ini needed)."""

from __future__ import annotations

import logging
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
    found = _revisions_of(database_url)
    return None if found is None else schema_gap(found)


def upgrade_for_serve(database_url: str) -> None:
    """Migrate the database to head as ``serve --migrate`` does, and say what was done in
    one line (nothing when it was at head), without Alembic's lines unless logging is at
    DEBUG: a first start printed twenty of them, and every start two."""
    alembic = logging.getLogger("alembic")
    level = alembic.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        alembic.setLevel(logging.WARNING)
    try:
        found = _revisions_of(database_url)
        if found is not None and schema_gap(found) is None:
            return
        upgrade(database_url)
    finally:
        alembic.setLevel(level)
    was = "" if found is None else f" from {shown_revisions(found)}"
    logging.getLogger("benchlink.cloud").info(
        "migrated the database%s to %s", was, ", ".join(sorted(head_revisions()))
    )


def _revisions_of(database_url: str) -> frozenset[str] | None:
    """The revisions the database is at; None if it cannot be reached now."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.db.engine import make_engine
    from cloud.db.uow import read_connection

    engine = make_engine(database_url)
    try:
        with read_connection(engine) as conn:
            return current_revisions(conn)
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


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
