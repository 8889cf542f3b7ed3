"""docs/reliability.md is written from the run's own figures: the seed and commit at the top,
the guarantees, the faults by kind, the totals; and `make reliability` is what runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.support.cloud import REPO


def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reliability_runner", REPO / "bin" / "reliability.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("reliability_runner", module)
    spec.loader.exec_module(module)
    return module


RUN = {
    "seed": 4242,
    "long": True,
    "records": [
        {
            "section": "network",
            "test": "edge -> fault proxy -> cloud",
            "faults": {"blackhole": 1, "lose_response": 3},
            "readings": 900,
            "lost": 0,
            "doubled": 0,
            "http_5xx": 0,
        },
        {
            "section": "power",
            "test": "kill -9 inside commits",
            "faults": {"kill -9 (inside)": 7, "lose_response": 2},
            "readings": 100,
            "lost": 0,
            "doubled": 0,
        },
        {
            "section": "serial_window",
            "test": "serial",
            "faults": {"kill -9 (serial capture)": 2},
            "losses": [3, 9],
            "max_lines": 9,
            "mean_lines": 6.0,
            "max_ms": 45,
            "rate": 200,
        },
        {
            "section": "soak",
            "test": "soak",
            "faults": {},
            "readings": 60000,
            "lost": 0,
            "doubled": 0,
            "minutes": 10.0,
            "viewer_readings": 300000,
            "chart_queries": 1190,
            "errors": 0,
            "rss_mb": {"edge 1": [61.2, 61.9]},
            "rss_slope_mb_per_min": {"edge 1": 0.071},
            "p99_ms": {"live": [1180, 1203]},
            "p99_slope_ms_per_min": {"live": 2.5},
            "p99_median_ms": {"live": 1190},
            "load_average": [3.1, 4.2],
        },
    ],
    "also": {"tests/cloud/test_access.py": {"passed": 31, "skipped": 0}},
}


def test_the_page_carries_the_runs_figures() -> None:
    page = runner().render(RUN, "abc123def456", "2026-12-06 02:00 UTC", 754.0)
    assert "seed **4242**" in page and "`abc123def456`" in page
    assert "BENCHLINK_RELIABILITY_SEED=4242 make reliability" in page
    assert "| lose_response | 5 |" in page  # summed over the tests
    assert "| blackhole | 1 |" in page
    assert "Readings checked: **61000** · lost: **0** · doubled: **0**" in page
    assert "at most **9 lines** (45 ms" in page
    assert "## Not promised" in page and "fsync" in page
    assert "12.6 min" in page
    assert "| edge 1 | 61.2 | 61.9 | 0.071 |" in page  # the soak's memory, process by process
    assert "| live | 1180 | 1203 | 2.5 |" in page
    assert "| `tests/cloud/test_access.py` | 31 | 0 |" in page


def test_make_reliability_runs_the_runner() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "reliability: $(STAMP)\n\t$(BIN)/python bin/reliability.py" in makefile


def test_the_committed_page_is_the_runners() -> None:
    """docs/reliability.md comes from a passing run, not from an editor: rendering the
    figures it states gives the same guarantees and the same text around them."""
    text = (REPO / "docs" / "reliability.md").read_text()
    assert text.startswith("# Reliability: what benchlink promises")
    assert "Written by `make reliability` (long form)" in text, "commit a long run's page"
    for promise, _, _ in runner().GUARANTEES:
        assert promise in text, f"the page predates the guarantee: {promise}"
    assert "lost: **0** · doubled: **0**" in text


def test_the_sections_run_from_their_areas_are_counted_by_outcome(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.cloud.test_access" name="test_a"/>'
        '<testcase classname="tests.cloud.test_access" name="test_b"><skipped/></testcase>'
        '<testcase classname="tests.edge.test_disk_full" name="test_c"><failure/></testcase>'
        '<testcase classname="tests.edge.test_disk_full.TestX" name="test_d"/>'
        '<testcase classname="tests.reliability.test_soak" name="test_e"/>'
        "</testsuite></testsuites>"
    )
    assert runner().outcomes(junit) == {
        "tests/edge/test_disk_full.py": {"failed": 1, "passed": 1},
        "tests/cloud/test_access.py": {"passed": 1, "skipped": 1},
    }
