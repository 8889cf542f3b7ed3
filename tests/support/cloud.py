"""The real cloud service in a subprocess, for integration tests (edge, live stream, demo).

``CloudServer`` runs ``benchlink-cloud serve`` on a free port (this interpreter's, or another
``launcher`` in another ``cwd``: ``poetry run benchlink-cloud`` in a clone); ``stop()``/``kill()``
and ``start()`` again simulate an outage. ``bootstrap()`` creates a project, a sensor, an
experiment, a run and a running capture session through the public API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

from tests.support.services import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CloudServer:
    database_url: str
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    log_level: str = "warning"
    workers: int = 1
    launcher: tuple[str, ...] = (sys.executable, "-m", "cloud.cli")
    cwd: Path = REPO
    #: False: ``env`` is the whole environment (a launcher that must not see this one's venv)
    inherit_env: bool = True
    #: a process group of its own, so that :meth:`kill_group` kills every worker at once
    own_group: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> CloudServer:
        # An upper bound only: on a loaded shared machine (load average 30 on 2 cores) a
        # cloud with its migrations took more than 30 s to answer /readyz.
        inherited = os.environ if self.inherit_env else {}
        env = {**inherited, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *self.launcher,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
                "--migrate",
                "--workers",
                str(self.workers),
                "--log-level",
                self.log_level,
            ],
            cwd=self.cwd,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=self.own_group,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloud server exited with {self.proc.returncode}")
            if wait_port("127.0.0.1", self.port, timeout=0.2):
                try:
                    if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("cloud server did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill_group(self) -> None:
        """kill -9 of the whole service (``own_group``): the supervisor and its workers, as
        systemd does to a unit's cgroup; killing the supervisor alone leaves workers serving."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> CloudServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
