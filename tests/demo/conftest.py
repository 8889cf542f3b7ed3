"""Fixtures of the demo tests: a live cloud on SQLite, and the bin/ scripts as modules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cloud import CloudServer

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"

# The scripts import each other the way they do when run as `python bin/x.py`.
if str(BIN) not in sys.path:
    sys.path.insert(0, str(BIN))


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudServer]:
    """The real cloud in a subprocess, on a SQLite file of this test."""
    server = CloudServer(f"sqlite:///{tmp_path / 'cloud.db'}", log_path=tmp_path / "cloud.log")
    with server:
        yield server


def run_script(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``bin/<name>`` as a user would; fail the test with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, str(BIN / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc
