"""One bootstrapped project on a running cloud, through its public API: the ids and headers
the benchmarks and the integration tests send readings and queries with.

``bootstrap()`` creates a project, a sensor, an experiment, a run and a running capture
session; ``backdate()`` moves a session's start into the past (the API starts one now).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import update


@dataclass
class Bench:
    """Ids and headers of one bootstrapped project."""

    base_url: str
    owner_user_id: str
    project_id: str
    sensor_id: str
    token: str
    experiment_id: str
    run_id: str
    capture_session_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "X-User-Id": self.owner_user_id,
            "X-Project-Id": self.project_id,
            "X-Project-Role": "owner",
        }

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30)

    def readings(self, **params: Any) -> list[dict[str, Any]]:
        """Every stored reading matching the filter (default: this run), in time order."""
        params.setdefault("run_id", self.run_id)
        items: list[dict[str, Any]] = []
        cursor = None
        with self.client() as c:
            while True:
                q = {**params, "limit": 10_000, **({"cursor": cursor} if cursor else {})}
                r = c.get("/api/v1/telemetry", params=q)
                r.raise_for_status()
                body = r.json()
                items += body["items"]
                cursor = body["next_cursor"]
                if not cursor:
                    return items


def bootstrap(
    base_url: str,
    *,
    profile: dict[str, Any] | None = None,
    display_unit: str = "C",
    sensor_name: str | None = None,
) -> Bench:
    owner = str(uuid.uuid4())
    with httpx.Client(base_url=base_url, timeout=30) as c:
        r = c.post("/api/v1/projects", headers={"X-User-Id": owner}, json={"name": "test_project"})
        r.raise_for_status()
        project_id = r.json()["id"]
        h = {"X-User-Id": owner, "X-Project-Id": project_id, "X-Project-Role": "owner"}
        r = c.post(
            "/api/v1/sensors",
            headers=h,
            json={
                "project_id": project_id,
                "name": sensor_name or f"sensor-{uuid.uuid4().hex[:6]}",
                "type": "thermocouple",
                "input_unit": "mV",
                "display_unit": display_unit,
                "conversion_profile": profile
                or {"version": "v1", "kind": "linear", "payload": {"a": 1.0, "b": 0.0}},
            },
        )
        r.raise_for_status()
        sensor_id, token = r.json()["sensor"]["id"], r.json()["token"]
        r = c.post("/api/v1/experiments", headers=h, json={"project_id": project_id, "name": "e"})
        r.raise_for_status()
        experiment_id = r.json()["id"]
        r = c.post(f"/api/v1/experiments/{experiment_id}/runs", headers=h)
        r.raise_for_status()
        run_id = r.json()["id"]
        r = c.post(
            f"/api/v1/runs/{run_id}/capture-sessions",
            headers=h,
            json={"ordinal_number": 1, "status": "running"},
        )
        r.raise_for_status()
        return Bench(
            base_url, owner, project_id, sensor_id, token, experiment_id, run_id, r.json()["id"]
        )


def backdate(database_url: str, capture_session_id: str, started_at: datetime) -> None:
    """Say a capture session started at ``started_at``. The API starts a session now and it
    takes no reading from before that: data timestamped earlier needs an older session."""
    from cloud.db.engine import make_engine  # the cloud's engine: its URL forms and types
    from cloud.db.models import CaptureSession

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(CaptureSession)
                .where(CaptureSession.id == uuid.UUID(capture_session_id))
                .values(started_at=started_at)
            )
    finally:
        engine.dispose()
