"""Peers measured side by side (``PEERS=1``): the MLflow tracking server in its own venv
under ``bench/.peers/mlflow`` (created on first use), on the same PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import PeakRss, libpq
from bench.services import free_port

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
MLFLOW_VENV = PEERS_DIR / "mlflow"


def ensure_mlflow() -> Path:
    exe = MLFLOW_VENV / "bin" / "mlflow"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        pip = str(MLFLOW_VENV / "bin" / "pip")
        # SQLAlchemy 2.1 (which mlflow pulls in) drives postgresql:// with psycopg 3
        subprocess.run([pip, "install", "-q", "mlflow", "psycopg[binary]"], check=True)
    return exe


@dataclass
class PeerServer:
    url: str
    rss: PeakRss


@contextlib.contextmanager
def mlflow_server(database_url: str, workers: int, log: Path) -> Iterator[PeerServer]:
    """``mlflow server`` with its backend store in its own database next to ours."""
    import psycopg

    base, name = libpq(database_url).rsplit("/", 1)
    store = f"{name}_mlflow"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{store}"')
    port = free_port()
    exe = ensure_mlflow()
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    str(exe),
                    "server",
                    "--backend-store-uri",
                    f"{base}/{store}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ],
                stdout=out,
                stderr=out,
                env={**os.environ, "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ['PATH']}"},
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180  # first start creates its schema
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start")
                time.sleep(0.5)
            yield PeerServer(url, PeakRss(proc.pid))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{store}" WITH (FORCE)')
