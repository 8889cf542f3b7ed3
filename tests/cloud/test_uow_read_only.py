"""``read_only`` units of work on PostgreSQL: READ ONLY transactions, ended by a COMMIT so the
pool's connections keep the statements psycopg prepared on them (a rollback makes psycopg
deallocate them all, and ingest's statements were planned again after every poll of the
periodic readers that share the pool)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import InternalError
from sqlalchemy.orm import Session, sessionmaker

from cloud.db.engine import make_engine
from cloud.db.uow import read_only, transaction

PREPARED = text("SELECT count(*) FROM pg_prepared_statements")


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)  # one connection: the same one
    try:
        yield engine
    finally:
        engine.dispose()


def prepare_one(sessions: sessionmaker[Session]) -> int:
    """Run one statement often enough that psycopg prepares it; the server's count then."""
    for _ in range(6):
        with transaction(sessions) as db:
            db.execute(text("SELECT 1 + :n"), {"n": 1})
    with transaction(sessions) as db:
        return int(db.scalar(PREPARED) or 0)


def test_a_read_only_unit_keeps_the_connections_prepared_statements(engine: Engine) -> None:
    sessions = sessionmaker(engine)
    assert prepare_one(sessions) >= 1
    with read_only(sessions) as db:
        assert db.execute(text("SELECT 2")).scalar() == 2
    with transaction(sessions) as db:
        assert db.scalar(PREPARED) >= 1  # a rollback would have deallocated them all


def test_a_write_in_a_read_only_unit_fails(engine: Engine) -> None:
    sessions = sessionmaker(engine)
    with transaction(sessions) as db:
        db.execute(text("CREATE TABLE t (x int)"))
    with pytest.raises(InternalError, match="read-only transaction"), read_only(sessions) as db:
        db.execute(text("INSERT INTO t VALUES (1)"))
    with transaction(sessions) as db:  # the connection is usable, and read-write, after it
        db.execute(text("INSERT INTO t VALUES (2)"))
        assert db.scalar(text("SELECT count(*) FROM t")) == 1


def test_a_snapshot_unit_reads_one_snapshot(engine: Engine, pg_url: str) -> None:
    sessions = sessionmaker(engine)
    with transaction(sessions) as db:
        db.execute(text("CREATE TABLE t (x int)"))
    other = make_engine(pg_url)
    try:
        with read_only(sessions, snapshot=True) as db:
            assert db.scalar(text("SELECT count(*) FROM t")) == 0
            with other.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
            assert db.scalar(text("SELECT count(*) FROM t")) == 0  # the first read's snapshot
        with read_only(sessions) as db:
            assert db.scalar(text("SELECT count(*) FROM t")) == 1
    finally:
        other.dispose()
