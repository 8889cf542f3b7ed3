"""The real cloud service in a subprocess, for integration tests (edge, live stream, demo).

``CloudServer`` runs ``benchlink-cloud serve`` on a free port (this interpreter's, or another
``launcher`` in another ``cwd``: ``poetry run benchlink-cloud`` in a clone); ``stop()``/``kill()``
and ``start()`` again simulate an outage. ``bootstrap()`` creates a project, a sensor, an
experiment, a run and a running capture session through the public API (bench/project.py,
which the benchmarks share).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.project import Bench, backdate, bootstrap
from bench.services import free_port, wait_port

__all__ = ["Bench", "CloudServer", "backdate", "bootstrap"]

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
