"""The seam for sources: a source that is no part of benchlink (tests/edge/toy_source.py),
installed as a package installs one -- a ``benchlink.edge_sources`` entry point -- runs in the
real daemon against the real cloud, without a line of ``edge/`` naming it; a sensor of a source
that is not installed, or whose package fails to load, is one config line."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Literal

import pytest
from pydantic import create_model

from edge.cli import EXIT_CONFIG
from edge.config import ConfigError, SensorConfig, load_config
from edge.sources.base import SourceKind, register
from tests.edge.helpers import BIN, Bound, EdgeProcess, RealCloud, running, wait_for, write_config
from tests.support.cloud import REPO
from tests.support.services import free_port


def install_plugin(site: Path, module: str) -> dict[str, str]:
    """A distribution with one ``benchlink.edge_sources`` entry point, ``toy = module``, on a
    path of its own: the environment that makes a process see it installed."""
    info = site / "benchlink_toy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: benchlink-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[benchlink.edge_sources]\ntoy = {module}\n")
    path = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path.rstrip(os.pathsep)}


def toy_config(tmp_path: Path, cloud_url: str, b: Bound, count: int) -> Path:
    path = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud_url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # no broker: no MQTT sensor either
        sensors=[
            {
                "sensor_id": b.sensor_id,
                "token": b.token,
                "run_id": b.run_id,
                "capture_session_id": b.session_id,
                "source": "toy",
                "count": count,
            }
        ],
    )
    path.chmod(0o600)
    return path


def test_a_source_installed_as_a_plugin_runs_in_the_daemon(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (b,) = cloud.bootstrap(1)
    env = install_plugin(tmp_path / "site", "tests.edge.toy_source")
    edge = EdgeProcess(toy_config(tmp_path, cloud.url, b, count=30), tmp_path / "edge.log", env)
    with running(edge):
        wait_for(lambda: len(cloud.telemetry(b)) >= 30, 60, "the toy's readings in the cloud")
        status = edge.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert edge.terminate() == 0
    items = sorted(cloud.telemetry(b), key=lambda i: i["meta"]["seq"])
    assert [(i["meta"]["seq"], i["raw_value"]) for i in items] == [(n, float(n)) for n in range(30)]
    sensor = json.loads(status.stdout)["sensors"][b.sensor_id]
    assert sensor["source"] == "toy"
    log = edge.log.read_text()
    assert "running with 1 sensor(s)" in log and "Traceback" not in log


def benchlink_edge(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "benchlink-edge"), "--config", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def bound() -> Bound:
    sid = str(uuid.uuid4())
    return Bound(sid, "bl_s3cr3t", sid, sid, sid, {})


def test_a_source_not_installed_is_one_config_line(tmp_path: Path) -> None:
    config = toy_config(tmp_path, "http://127.0.0.1:1", bound(), count=1)
    out = benchlink_edge(config, {})
    assert out.returncode == EXIT_CONFIG
    n = config.read_text().splitlines().index('source = "toy"') + 1
    assert out.stderr.strip().splitlines() == [
        f"benchlink-edge: config error: {config}:{n}: sensors[0].source: unknown source 'toy'; use one of"
        ' "mqtt", "serial", or install the package that adds it'
    ]


def test_a_plugin_that_fails_to_load_is_named_where_its_source_is_used(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "site", "tests.edge.no_such_source")
    config = toy_config(tmp_path, "http://127.0.0.1:1", bound(), count=1)
    out = benchlink_edge(config, env)
    assert out.returncode == EXIT_CONFIG
    (line,) = out.stderr.strip().splitlines()
    assert "sensors[0].source: source 'toy' is installed but failed to load" in line
    assert "tests.edge.no_such_source: ModuleNotFoundError" in line and "reinstall it" in line

    # the sensors of the other sources are not held up by it
    text = config.read_text().replace('source = "toy"\ncount = 1', 'source = "mqtt"')
    config.write_text(text)
    ok = benchlink_edge(config, env)
    assert ok.returncode == 0, ok.stderr


def test_a_source_registered_after_a_config_was_loaded_is_in_the_next_load(
    tmp_path: Path,
) -> None:
    name = f"late_{uuid.uuid4().hex[:8]}"
    config = toy_config(tmp_path, "http://127.0.0.1:1", bound(), count=3)
    config.write_text(config.read_text().replace('source = "toy"', f'source = "{name}"'))
    with pytest.raises(ConfigError, match=f"unknown source '{name}'"):
        load_config(config)
    model = create_model(
        "LateSensor", __base__=SensorConfig, source=(Literal[name], ...), count=(int, ...)
    )
    register(SourceKind(name, model, lambda sensors, ctx: {}))
    (sensor,) = load_config(config).sensors
    assert type(sensor) is model and sensor.count == 3  # type: ignore[attr-defined]
