"""The cloud app on a real database: every test runs on SQLite and on PostgreSQL.

Each test gets its own database (a temporary SQLite file, or a PostgreSQL database created
and dropped for it) migrated by Alembic, so tests never depend on one another.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from cloud.app import create_app
from cloud.container import AppContainer, app_container
from cloud.db import models
from cloud.migrate import upgrade
from cloud.settings import Settings
from tests.support.services import postgres_database

FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
#: When the capture session of :meth:`Api.stack` started: before any fixed timestamp the
#: tests send (a session takes no reading from before its start).
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cloud.db'}"
        upgrade(url)
        yield url
    else:
        with postgres_database() as url:
            upgrade(url)
            yield url


@dataclass
class Identity:
    user_id: str
    project_id: str
    role: str = "owner"

    def headers(self, role: str | None = None) -> dict[str, str]:
        return {
            "X-User-Id": self.user_id,
            "X-Project-Id": self.project_id,
            "X-Project-Role": role or self.role,
        }


class Api:
    """A TestClient with shortcuts for building fixtures through the public API."""

    def __init__(self, client: TestClient) -> None:
        self.c = client

    @property
    def services(self) -> AppContainer:
        """The app's container (its sessions, hub, sinks, listeners)."""
        return app_container(self.c.app)

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.c.request(method, url, **kw)

    def post(self, url: str, body: Any = None, **kw: Any) -> httpx.Response:
        if body is not None:
            kw["content"] = json.dumps(body)
            kw["headers"] = {**FORM, **kw.get("headers", {})}
        return self.c.post(url, **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.c.get(url, **kw)

    def patch(self, url: str, body: Any, **kw: Any) -> httpx.Response:
        return self.c.patch(url, content=json.dumps(body), **kw)

    def put(self, url: str, body: Any, **kw: Any) -> httpx.Response:
        return self.c.put(url, content=json.dumps(body), **kw)

    # --- builders ---------------------------------------------------------------------------

    def project(self, name: str = "p") -> Identity:
        user = str(uuid.uuid4())
        r = self.post("/api/v1/projects", {"name": name}, headers={"X-User-Id": user})
        assert r.status_code == 201, r.text
        return Identity(user, r.json()["id"])

    def sensor(
        self,
        who: Identity,
        profile: dict[str, Any] | None = None,
        name: str | None = None,
        display_unit: str = "C",
    ) -> tuple[str, str]:
        r = self.post(
            "/api/v1/sensors",
            {
                "project_id": who.project_id,
                "name": name or f"s-{uuid.uuid4().hex[:8]}",
                "type": "thermocouple",
                "input_unit": "mV",
                "display_unit": display_unit,
                "conversion_profile": profile
                or {"version": "v1", "kind": "linear", "payload": {"a": 2.0, "b": 1.0}},
            },
            headers=who.headers(),
        )
        assert r.status_code == 201, r.text
        return r.json()["sensor"]["id"], r.json()["token"]

    def experiment(self, who: Identity, name: str = "exp", tags: list[str] | None = None) -> str:
        body = {"project_id": who.project_id, "name": name, "tags": tags or []}
        r = self.post("/api/v1/experiments", body, headers=who.headers())
        assert r.status_code == 201, r.text
        return str(r.json()["experiment_id"])

    def run(self, who: Identity, experiment_id: str, body: Any = None) -> str:
        r = self.post(f"/api/v1/experiments/{experiment_id}/runs", body, headers=who.headers())
        assert r.status_code == 201, r.text
        return str(r.json()["run_id"])

    def session(self, who: Identity, run_id: str, ordinal: int = 1, status: str = "running") -> str:
        r = self.post(
            f"/api/v1/runs/{run_id}/capture-sessions",
            {"ordinal_number": ordinal, "status": status},
            headers=who.headers(),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["capture_session_id"])

    def backdate(self, session_id: str, started_at: datetime) -> None:
        """Say a capture session started at ``started_at``. The API starts a session now, and
        takes only readings from then on: a test with fixed timestamps needs an older one."""
        with self.services.sessionmaker.begin() as db:
            db.execute(
                update(models.CaptureSession)
                .where(models.CaptureSession.id == uuid.UUID(session_id))
                .values(started_at=started_at)
            )

    def stack(self, who: Identity, started_at: datetime | None = LONG_AGO) -> dict[str, str]:
        """sensor + experiment + run + running session in the caller's project; the session
        started at ``started_at`` (None: now, as the API starts it)."""
        sensor_id, token = self.sensor(who)
        experiment_id = self.experiment(who)
        run_id = self.run(who, experiment_id)
        session_id = self.session(who, run_id)
        if started_at is not None:
            self.backdate(session_id, started_at)
        return {
            "sensor_id": sensor_id,
            "token": token,
            "experiment_id": experiment_id,
            "run_id": run_id,
            "capture_session_id": session_id,
        }

    def ingest(
        self,
        ids: dict[str, str],
        readings: list[dict[str, Any]],
        *,
        token: str | None = None,
        key: str | None = None,
        raw: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or ids['token']}", **FORM}
        if key is not None:
            headers["Idempotency-Key"] = key
        body = (
            raw
            if raw is not None
            else json.dumps(
                {
                    "sensor_id": ids["sensor_id"],
                    "run_id": ids["run_id"],
                    "capture_session_id": ids["capture_session_id"],
                    "readings": readings,
                }
            )
        )
        return self.c.post("/api/v1/telemetry", content=body, headers=headers)

    def readings(self, who: Identity, **params: str) -> list[dict[str, Any]]:
        r = self.get("/api/v1/telemetry", params={"limit": 10000, **params}, headers=who.headers())
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


def make_client(database_url: str, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(database_url=database_url, **settings)))


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    with make_client(database_url) as client:
        yield Api(client)


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    if field is not None:
        fields = [e["field"] for e in body["errors"]]
        assert any(f == field or f.startswith(field) for f in fields), (field, fields)
    return body
