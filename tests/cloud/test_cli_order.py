"""benchlink-cloud takes a command's options on either side of its name, as the edge does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud.cli import command_first


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (["serve", "--dev-identity"], ["serve", "--dev-identity"]),
        (["--dev-identity", "serve"], ["serve", "--dev-identity"]),
        (["--port", "8003", "serve", "--workers", "1"], ["serve", "--port", "8003", "--workers", "1"]),
        (["--database-url", "sqlite:///x.db", "migrate"], ["migrate", "--database-url", "sqlite:///x.db"]),
        (["--help", "serve"], ["--help", "serve"]),
        (["--version"], ["--version"]),
        ([], []),
    ],
)  # fmt: skip
def test_options_before_the_command_are_the_commands(given: list[str], parsed: list[str]) -> None:
    assert command_first(given) == parsed


def cloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_migrate_with_its_database_before_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    run = cloud("--database-url", url, "migrate")
    assert run.returncode == 0, run.stderr
    assert f"migrated {url} to head" in run.stdout
    assert (tmp_path / "cloud.db").exists()


def test_a_bad_serve_option_before_the_command_is_one_line_about_it() -> None:
    run = cloud("--workers", "0", "--dev-identity", "serve")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert "--workers" in run.stderr and "'auto'" in run.stderr, run.stderr


def test_an_unknown_option_is_still_refused() -> None:
    run = cloud("--no-such-option", "serve")
    assert run.returncode == 2
    assert "unrecognized arguments: --no-such-option" in run.stderr
