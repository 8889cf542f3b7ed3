"""`benchlink-cloud serve --workers`: 'auto' (the default) is one process per core on
PostgreSQL and one on SQLite; a count that is not a positive number is one line that says what
to give, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cloud.cli import worker_count


def test_auto_is_one_process_per_usable_core_on_postgresql() -> None:
    cores = len(os.sched_getaffinity(0))
    assert worker_count("auto", "postgresql+psycopg://u@127.0.0.1:5432/b") == cores


def test_auto_is_one_process_on_sqlite() -> None:
    # Several processes on one SQLite file would queue behind its single writer's lock.
    assert worker_count("auto", "sqlite:///var/benchlink.db") == 1


def test_a_given_count_is_kept() -> None:
    assert worker_count(1, "postgresql+psycopg://u@127.0.0.1:5432/b") == 1
    assert worker_count(3, "sqlite:///var/benchlink.db") == 3


@pytest.mark.parametrize("given", ["0", "-2", "two", ""])
def test_a_count_that_is_not_a_positive_number_is_one_line(given: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "serve", "--workers", given],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "--workers" in run.stderr and "'auto'" in run.stderr, run.stderr
