"""The reliability suite: faults injected on purpose, counts checked exactly.

Two lengths: a short slice of every section in ``make test``, and the long form in ``make
reliability`` (``BENCHLINK_RELIABILITY=long``, run by ``bin/reliability.py``). Every random
choice comes from one seed, printed at the end of the run; ``BENCHLINK_RELIABILITY_SEED=N``
replays it. Each test records what it injected and checked in :class:`Figures`; the runner
writes them into docs/reliability.md (``BENCHLINK_RELIABILITY_FIGURES`` names the JSON file).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

LONG = os.environ.get("BENCHLINK_RELIABILITY", "") == "long"
SEED = int(os.environ.get("BENCHLINK_RELIABILITY_SEED") or random.SystemRandom().randrange(10**6))
FIGURES_PATH = os.environ.get("BENCHLINK_RELIABILITY_FIGURES", "")


def scale(short: float, long: float) -> float:
    """The slice's amount in ``make test``, the long one in ``make reliability``."""
    return long if LONG else short


class Figures:
    """What the tests injected and checked, one record per test (written only if it passed
    its checks: a failing test records nothing, and the runner reports the failure)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, section: str, test: str, **values: Any) -> None:
        self.records.append({"section": section, "test": test, **values})


_FIGURES = Figures()


@pytest.fixture
def figures() -> Figures:
    return _FIGURES


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random source: the run's seed and the test's name (order does not matter)."""
    return random.Random(f"{SEED}:{request.node.name}")


@pytest.fixture
def seed_note() -> str:
    return f"seed {SEED} (rerun: BENCHLINK_RELIABILITY_SEED={SEED})"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"reliability seed: {SEED} (rerun with BENCHLINK_RELIABILITY_SEED={SEED})"
        f" · {'long' if LONG else 'slice'}"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if FIGURES_PATH:
        Path(FIGURES_PATH).write_text(
            json.dumps({"seed": SEED, "long": LONG, "records": _FIGURES.records}, indent=1)
        )
