"""Fixtures of the client's tests: a real cloud (``benchlink-cloud serve`` in a subprocess) on
SQLite and on PostgreSQL, and a project of this test's own on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchlink import Client, Retry
from tests.support.cloud import CloudServer
from tests.support.services import postgres_database

#: Short waits: a test that retries should not sit out a notebook's patient backoff.
QUICK = Retry(attempts=4, backoff=0.05, cap=0.5)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudServer]:
    """One cloud per module and database; each test makes its own project on it."""
    tmp = tmp_path_factory.mktemp("cloud")
    if request.param == "sqlite":
        with CloudServer(f"sqlite:///{tmp / 'cloud.db'}", log_path=tmp / "cloud.log") as server:
            yield server
        return
    with postgres_database() as url, CloudServer(url, log_path=tmp / "cloud.log") as server:
        yield server


def new_project(url: str, **kw: Any) -> Client:
    """A client acting as the owner of a new project of a new user."""
    owner = str(uuid.uuid4())
    with Client(url, user=owner, retry=QUICK) as bare:
        project = bare.projects.create(f"p-{uuid.uuid4().hex[:8]}")
    return Client(url, user=owner, project=project.id, role="owner", retry=QUICK, **kw)


@pytest.fixture
def client(cloud: CloudServer, tmp_path: Path) -> Iterator[Client]:
    c = new_project(cloud.url, offline_dir=tmp_path / "outbox")
    try:
        yield c
    finally:
        c.close()


def send_readings(
    url: str,
    token: str,
    sensor_id: str,
    session: Any,
    raw_values: list[float],
    *,
    start: datetime | None = None,
    step: timedelta = timedelta(milliseconds=100),
) -> list[datetime]:
    """What an edge does: post readings with the sensor's token. Their timestamps."""
    start = start or datetime.now(UTC) - step * len(raw_values)
    times = [start + step * i for i in range(len(raw_values))]
    body = {
        "sensor_id": sensor_id,
        "run_id": session.run_id,
        "capture_session_id": session.id,
        "readings": [
            {"timestamp": t.isoformat(), "raw_value": v}
            for t, v in zip(times, raw_values, strict=True)
        ],
    }
    r = httpx.post(
        f"{url}/api/v1/telemetry",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    r.raise_for_status()
    return times


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default offline queue (``$XDG_STATE_HOME/benchlink``) is this test's own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
