"""docs/client.md is a tutorial the suite runs: its ``python`` blocks, in order, in a new
interpreter against a live cloud, ending with the PNG it plots; its other blocks name only
extras and commands that exist."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cloud import REPO, CloudServer

DOC = REPO / "docs" / "client.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == language]


@pytest.fixture
def sqlite_cloud(tmp_path: Path) -> Iterator[CloudServer]:
    with CloudServer(f"sqlite:///{tmp_path / 'cloud.db'}", log_path=tmp_path / "cloud.log") as c:
        yield c


def test_the_tutorial_runs_top_to_bottom_and_plots_the_run(
    sqlite_cloud: CloudServer, tmp_path: Path
) -> None:
    script = "\n".join(blocks("python"))
    env = {**os.environ, "BENCHLINK_URL": sqlite_cloud.url, "XDG_STATE_HOME": str(tmp_path / "s")}
    env.pop("BENCHLINK_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**env, "HOME": str(tmp_path)},  # no config file of the developer's
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "furnace_tc °C v1" in out and "running 1 running" in out
    assert "'accepted': 600" in out
    # A run deleted, listed and restored.
    assert "run scratch True\n[('run', 'scratch')]\nscratch []\n" in out
    assert "UTC 600 " in out  # the frame's zone and size
    assert "°C 600 " in out  # the series' unit and total
    assert "ramp 1 {'setpoint_c': 420}" in out  # the frame's description of the run
    assert "furnace-run.parquet 600 ramp 1 100.0" in out  # the exported file, at 100%
    assert "422" in out and "input_unit" in out  # the error's field
    assert "1 0 ['cancelled']" in out and "['archived']" in out
    png = tmp_path / "furnace-run.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_the_blocks_that_are_not_run_are_valid() -> None:
    for body in blocks("py"):
        ast.parse(body)
    extras = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for body in blocks("sh"):
        for extra_list in re.findall(r"\./client\[([\w,]+)\]", body):
            assert set(extra_list.split(",")) <= set(extras), extra_list
    assert any("benchlink-cloud serve" in b for b in blocks("sh"))
