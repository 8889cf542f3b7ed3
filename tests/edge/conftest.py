"""Edge fixtures: a fresh buffer per test, sensor ids, a config writer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.buffer import Buffer
from tests.edge.helpers import RealCloud
from tests.support.services import postgres_database


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    buf = Buffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


@pytest.fixture
def sensor(buffer: Buffer) -> str:
    sid = str(uuid.uuid4())
    buffer.upsert_sensor(sid, "secret-token", "mqtt", str(uuid.uuid4()), str(uuid.uuid4()))
    return sid


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[RealCloud]:
    """The real cloud app on SQLite in a subprocess (stop()/start() for an outage)."""
    c = RealCloud(tmp_path)
    c.start()
    yield c
    c.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def cloud_on_each_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RealCloud]:
    """The real cloud app in a subprocess on SQLite, and on a PostgreSQL database created and
    dropped for the test."""
    if request.param == "sqlite":
        c = RealCloud(tmp_path)
        c.start()
        yield c
        c.stop()
        return
    with postgres_database() as url:
        c = RealCloud(tmp_path, url)
        c.start()
        try:
            yield c
        finally:
            c.stop()  # before the database is dropped
