"""docs/calibration.md is executable: every ``bash`` block runs, in order, in one shell, against
a live cloud, so the page cannot drift from the code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.demo.conftest import REPO
from tests.demo.test_docs import FENCE, run_as_new_user, without_venv
from tests.support.cloud import CloudServer

DOC = REPO / "docs" / "calibration.md"
MARK = "### docs/calibration.md block"


def bash_blocks() -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == "bash"]


def test_the_page_fits_applies_and_fits_from_a_reference() -> None:
    text = "\n".join(bash_blocks())
    for step in ("/calibrations", "proposed_profile", "/conversion-profile", "reference_sensor_id"):
        assert step in text, f"no bash block does {step}"


def test_every_bash_block_runs_against_a_live_cloud(cloud: CloudServer, tmp_path: Path) -> None:
    script = ["set -euo pipefail"]
    for i, body in enumerate(bash_blocks(), start=1):
        script += [f"echo '{MARK} {i}' >&2", body]
    env = {**os.environ, "BASE": cloud.url, "TMPDIR": str(tmp_path)}
    env["PATH"] = without_venv(env["PATH"])
    proc = run_as_new_user(script, env, MARK, timeout=120)
    lines = proc.stdout.splitlines()
    c0, c1 = json.loads(lines[0])
    assert c1 == pytest.approx(1 / 1.0013, abs=2e-3) and c0 == pytest.approx(-0.3, abs=0.1)
    assert len(json.loads(lines[1])) == 2  # standard errors of both coefficients
    assert lines[2].startswith("rms ")
    correction = json.loads(lines[3])
    assert correction["coefficients"] == pytest.approx([c0, c1])
    # The bath: four pairs, fitted on values the first correction already made good.
    assert "pairs 4 from reference_sensor" in proc.stdout
    b0, b1 = json.loads(lines[-2])
    assert abs(b0 + b1 * 150.0 - 150.0) < 0.5 and b1 == pytest.approx(1.0, abs=0.01)
    assert lines[-1] == "v3"
