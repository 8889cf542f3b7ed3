"""Units of work: every transaction and connection of the API is opened here and nowhere else.

Routes take a :data:`cloud.deps.DbSession` (:func:`per_request`); the dependency commits after
the route returned (before the response is sent, so a failed commit is an error response,
not a lie) and rolls back on any exception. Code outside a request's dependencies (the ingest
worker thread, the middleware's idempotency records, background tasks) opens the same unit
with :func:`transaction`, or :func:`read_only` for reads that never commit. Work that must only
happen once the data is durable (live fan-out) is registered with :func:`after_commit`.

A few places need a connection of their own rather than a unit of work (the schema's version,
a session-level advisory lock, the live bus's LISTEN): each has its named function here.
``tests/cloud/test_container_uow.py`` holds the rule.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("benchlink.cloud")

_HOOKS = "benchlink_after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    session.info.setdefault(_HOOKS, []).append(fn)


def one_snapshot(session: Session) -> None:
    """Make the session's transaction, not begun yet, read one snapshot throughout: what one
    statement sees, the next sees too, and nothing committed in between (PostgreSQL's
    REPEATABLE READ; a SQLite transaction in WAL mode is one snapshot already)."""
    if session.get_bind().dialect.name == "postgresql":
        if session.in_transaction():
            raise RuntimeError("one_snapshot() must come before the transaction's first statement")
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def per_request(factory: sessionmaker[Session]) -> Iterator[Session]:
    """The request's transaction, as a FastAPI dependency (a generator)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        hooks = session.info.pop(_HOOKS, [])
        session.close()
    for fn in hooks:
        try:
            fn()
        except Exception:  # a live subscriber must never fail a committed request
            log.exception("after-commit hook failed")


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction outside a request's dependencies: committed at the end of the block,
    rolled back on any exception, its after-commit hooks run once it is committed."""
    yield from per_request(factory)


@contextlib.contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads: never committed; closing it ends its transaction."""
    session = factory()
    try:
        yield session
    finally:
        session.close()


def discard(session: Session) -> None:
    """Undo what the unit of work holding ``session`` did so far (it then commits nothing
    of it): for work found to be moot half-way, without raising."""
    session.rollback()


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A bare connection for reads below the ORM (Alembic's version table); never committed."""
    with engine.connect() as conn:
        yield conn


@contextlib.contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[bool]:
    """Whether this process got PostgreSQL's session-level advisory lock ``key``; held until
    the block ends. A connection of its own: the lock belongs to the connection and lasts
    the block, across any number of units of work (each commit here ends only the short
    transaction the lock function ran in, so the connection is not left idle in one)."""
    with engine.connect() as conn:
        held = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextlib.asynccontextmanager
async def listen_connection(
    dsn: str, connect_timeout: float
) -> AsyncIterator[psycopg.AsyncConnection]:
    """The live bus's LISTEN connection (psycopg async, autocommit): its own, not the pool's,
    because it is held for as long as the bus listens and opens no transaction."""
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, connect_timeout=int(connect_timeout)
    ) as conn:
        yield conn
