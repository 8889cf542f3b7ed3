"""docs/edge.md's operator commands, run as written against a real buffer (as docs/demo.md's
commands are run by tests/demo/test_docs.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from pathlib import Path

from edge.buffer import Buffer, NewReading, Write
from tests.edge.helpers import BIN, unbound_sensor, write_config
from tests.edge.test_buffer import T0
from tests.support.services import REPO

DOC = REPO / "docs" / "edge.md"
CONFIG = "/etc/benchlink/edge.toml"


def operator_commands() -> list[str]:
    """Every ``benchlink-edge`` command line of the page's code blocks (from the command on:
    ``sudo -u benchlink /opt/...`` is how the page runs them as the daemon's user), but
    ``run`` (the daemon itself: tests/edge/test_deploy.py starts it)."""
    code = "\n".join(re.findall(r"^```\w*\n(.*?)^```", DOC.read_text(), re.M | re.S))
    found = re.findall(r"(?m)^(?:sudo -u benchlink \S*/)?(benchlink-edge .*)$", code)
    return [line for line in found if "run" not in shlex.split(line, comments=True)]


def as_run(line: str, config: Path, sensor: str) -> list[str]:
    """The line's words with its [optional] parts and placeholders filled in."""
    words = shlex.split(line.replace("[", "").replace("]", ""), comments=True)
    words = [w for w in words if w != "..."]
    fill = {CONFIG: str(config), "SENSOR_ID": sensor, "N": "5", "ID": "1"}
    fill |= {"RUN": str(uuid.uuid4()), "SESSION": str(uuid.uuid4())}
    out = [
        sensor if w == "ID" and words[i - 1] == "--sensor" else fill.get(w, w)
        for i, w in enumerate(words)
    ]
    assert out[0] == "benchlink-edge", line
    return [str(BIN / "benchlink-edge"), *out[1:]]


def test_every_operator_command_in_the_docs_runs(tmp_path: Path) -> None:
    sensor = str(uuid.uuid4())
    table = unbound_sensor(sensor, "serial", port="/dev/null")
    buffer = tmp_path / "buffer.db"
    config = write_config(
        tmp_path / "edge.toml", cloud_url="http://127.0.0.1:9", buffer=buffer, sensors=[table]
    )
    buf = Buffer(buffer)  # what a daemon that ran once leaves: the sensor and a reading
    try:
        buf.upsert_sensor(sensor, "t", "serial", table["run_id"], table["capture_session_id"])
        buf.commit([Write([NewReading(sensor, T0, 1.5)])])
    finally:
        buf.close()
    lines = operator_commands()
    assert len(lines) >= 7
    for line in lines:
        cmd = as_run(line, config, sensor)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        # flush and replay exit 1 when batches stay queued: no cloud listens here
        allowed = (0, 1) if {"flush", "replay"} & set(cmd) else (0,)
        assert done.returncode in allowed, f"{line}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, line
