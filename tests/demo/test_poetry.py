"""The scenario's own set-up commands, with Poetry, on a clean clone.

The scenario gives them as ``poetry run python bin/migrate.py --database-url <dsn>``,
``poetry run python bin/demo_seed.py`` and ``poetry run python bin/demo_sensor.py --sensor-id
... --mode stream --duration 30``. Here Poetry 2 (from PyPI, in a throw-away venv) installs a
``git clone`` of this checkout's HEAD -- commit before running this -- and every command runs
in the clone as written (the stream for 5 s), against ``poetry run benchlink-cloud serve``
(``$BASE``, the scripts' default cloud URL, points at it); the edge daemon and the simulator run
from the clone's Poetry environment too. Nothing of the suite's own ``.venv`` or
of the user's Poetry set-up (cache, config, an active virtualenv) is used.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.demo.conftest import REPO
from tests.support.cloud import Bench, CloudServer
from tests.support.services import Broker, free_port, unavailable

pytestmark = pytest.mark.slow

PYPI = "https://pypi.org/simple/poetry/"
POETRY = "poetry>=2,<3"
SUMMARY = re.compile(r"sent (\d+) readings in (\d+) batches: accepted (\d+), late (\d+)")


@dataclass
class PoetryProject:
    """A clean clone with its Poetry environment installed."""

    root: Path
    poetry: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        """``poetry <args>`` in the clone; fail the test with its output if it fails."""
        proc = subprocess.run(
            [str(self.poetry), *args],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, (
            f"poetry {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    def popen(self, *args: str, log: Path, **env: str) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                [str(self.poetry), "run", *args],
                cwd=self.root,
                env={**self.env, **env},
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )


def isolated_env(tmp: Path) -> dict[str, str]:
    """This environment without any virtualenv or Poetry set-up, Poetry's state under ``tmp``."""
    dropped = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "BASE")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("POETRY_", "BENCHLINK_DATABASE"))
    }
    return env | {
        "POETRY_CACHE_DIR": str(tmp / "poetry-cache"),
        "POETRY_CONFIG_DIR": str(tmp / "poetry-config"),
        "POETRY_DATA_DIR": str(tmp / "poetry-data"),
        "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        # the clone's venv on Poetry's own Python (3.11), whatever `python3` is on PATH
        "POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true",
        "POETRY_NO_INTERACTION": "1",
        # no keyring prompt or D-Bus wait for PyPI credentials nobody needs
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "PYTHONUNBUFFERED": "1",
    }


def require_pypi() -> None:
    try:
        httpx.head(PYPI, timeout=10, follow_redirects=True).raise_for_status()
    except httpx.HTTPError as exc:
        unavailable("PyPI", f"{PYPI}: {exc}")


def checked(cmd: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> PoetryProject:
    require_pypi()
    tmp = tmp_path_factory.mktemp("poetry")
    env = isolated_env(tmp)
    tool = tmp / "poetry-venv"
    checked([sys.executable, "-m", "venv", str(tool)])
    checked([str(tool / "bin" / "python"), "-m", "pip", "install", "--quiet", POETRY], env=env)
    root = tmp / "benchlink"
    checked(["git", "clone", "--quiet", str(REPO), str(root)])
    clone = PoetryProject(root, tool / "bin" / "poetry", env)
    clone.run("install", "--no-interaction", timeout=600)
    return clone


@pytest.fixture(scope="module")
def cloud(project: PoetryProject) -> Iterator[CloudServer]:
    """``poetry run benchlink-cloud serve`` in the clone, on its default SQLite file."""
    server = CloudServer(
        "sqlite:///var/benchlink.db",
        launcher=(str(project.poetry), "run", "benchlink-cloud"),
        cwd=project.root,
        env=project.env,
        inherit_env=False,
        log_path=project.root.parent / "cloud.log",
    )
    with server:
        yield server


def test_poetry_install_puts_the_projects_packages_and_commands_in_the_clones_venv(
    project: PoetryProject,
) -> None:
    venv = project.root / ".venv"
    for command in ("benchlink-cloud", "benchlink-edge", "benchlink-sim"):
        assert (venv / "bin" / command).is_file(), command
    where = project.run("run", "python", "-c", "import cloud, edge; print(cloud.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(project.root)
    for command in ("benchlink-cloud", "benchlink-edge"):
        assert "usage: " + command in project.run("run", command, "--help").stdout


def test_migrate_on_sqlite_and_postgresql(project: PoetryProject, pg_url: str) -> None:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)  # as a user writes it
    for url in ("sqlite:///var/migrate-check.db", dsn):
        first = project.run("run", "python", "bin/migrate.py", "--database-url", url).stdout
        assert "migrated empty -> " in first, first
        again = project.run("run", "python", "bin/migrate.py", "--database-url", url).stdout
        assert "already at " in again, again


def sent(output: str) -> int:
    """The accepted count of demo_sensor's summary line (none late, all accepted)."""
    found = SUMMARY.search(output)
    assert found, output
    count, _, accepted, late = map(int, found.groups())
    assert count == accepted > 0 and late == 0, output
    return accepted


def seeded_bench(cloud: CloudServer, seed_json: str, sensor: str) -> Bench:
    """The seed's ids for ``sensor`` on the "Furnace calibration" run, in a running session
    (the scenario's ``POST /runs/{run_id}/capture-sessions``)."""
    seed = json.loads(seed_json)
    chosen = next(s for s in seed["sensors"] if s["name"] == sensor)
    run_id = seed["runs"]["Furnace calibration"]
    h = {
        "X-User-Id": seed["owner_user_id"],
        "X-Project-Id": seed["project_id"],
        "X-Project-Role": "owner",
    }
    with httpx.Client(base_url=cloud.url, headers=h, timeout=30) as c:
        path = f"/api/v1/runs/{run_id}/capture-sessions"
        running = c.get(path, params={"status": "running", "limit": 1}).json()["items"]
        if running:
            session = running[0]["id"]
        else:
            ordinal = len(c.get(path).json()["items"]) + 1
            r = c.post(path, json={"ordinal_number": ordinal, "status": "running"})
            r.raise_for_status()
            session = r.json()["id"]
    return Bench(
        cloud.url,
        seed["owner_user_id"],
        seed["project_id"],
        chosen["id"],
        chosen["token"],
        seed["experiments"]["Furnace calibration"],
        run_id,
        session,
    )


def test_seed_and_the_demo_sensor_as_the_scenario_writes_them(
    project: PoetryProject, cloud: CloudServer
) -> None:
    base = {"BASE": cloud.url}  # demo_seed/demo_sensor's --base-url default, as docs/demo.md
    seeded = project.run("run", "python", "bin/demo_seed.py", **base).stdout
    assert "project_id" in seeded and seeded.count("token        bls_") == 2, seeded

    result = project.run("run", "python", "bin/demo_seed.py", "--json", **base).stdout
    bench = seeded_bench(cloud, result, "chamber_mqtt")
    ids = [
        "--sensor-id",
        bench.sensor_id,
        "--token",
        bench.token,
        "--run-id",
        bench.run_id,
        "--capture-session-id",
        bench.capture_session_id,
    ]
    stream = project.run(
        "run", "python", "bin/demo_sensor.py", *ids, "--mode", "stream", "--duration", "5", **base
    ).stdout
    batch = project.run(
        "run", "python", "bin/demo_sensor.py", *ids, "--mode", "batch", **base
    ).stdout

    stored = bench.readings(sensor_id=bench.sensor_id)
    assert len(stored) == sent(stream) + sent(batch)
    assert sent(stream) >= 40  # 10 Hz for 5 s


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_simulator_and_the_edge_daemon_run_from_the_clone(
    project: PoetryProject, cloud: CloudServer, mosquitto: Broker
) -> None:
    """docs/demo.md's edge set-up: the seed writes an edge config for the simulator's device."""
    tmp = project.root.parent
    device = tmp / "tty-furnace"
    sim = project.popen("benchlink-sim", "--link", str(device), "--rate", "20", log=tmp / "sim.log")
    edge: subprocess.Popen[str] | None = None
    try:
        assert sim.stdout is not None
        assert sim.stdout.readline().strip() == str(device), (tmp / "sim.log").read_text()
        result = project.run(
            "run",
            "python",
            "bin/demo_seed.py",
            "--json",
            "--edge-toml",
            "var/edge.toml",
            "--edge-device",
            str(device),
            "--edge-mqtt-url",
            mosquitto.url,
            BASE=cloud.url,
        ).stdout
        config = tomllib.loads((project.root / "var" / "edge.toml").read_text())
        furnace = seeded_bench(cloud, result, "furnace_tc_k")
        assert config["sensors"][0]["capture_session_id"] == furnace.capture_session_id
        edge = project.popen(
            "benchlink-edge",
            "--config",
            "var/edge.toml",
            "run",
            log=tmp / "edge.log",
            BENCHLINK_EDGE_BUFFER__PATH=str(tmp / "buffer.db"),
            BENCHLINK_EDGE_METRICS__PORT=str(free_port()),
        )
        deadline = time.monotonic() + 60
        while not furnace.readings(sensor_id=furnace.sensor_id):
            assert edge.poll() is None, (tmp / "edge.log").read_text()
            assert time.monotonic() < deadline, (tmp / "edge.log").read_text()
            time.sleep(0.5)
    finally:
        if edge is not None:
            stop(edge)
        stop(sim)
    assert edge is not None and edge.returncode == 0, (tmp / "edge.log").read_text()
    assert sim.returncode == 0, (tmp / "sim.log").read_text()


def test_the_two_package_lists_name_the_same_packages() -> None:
    """Poetry's ``packages`` and setuptools' ``find`` must install the same code."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    poetry = {p["include"] for p in meta["tool"]["poetry"]["packages"]}
    setuptools = {p.rstrip("*") for p in meta["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert poetry == setuptools
    assert all((REPO / name / "__init__.py").is_file() for name in poetry)
