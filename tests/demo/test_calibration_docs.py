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
    # The two telemetry answers print without a newline: the line ends with the pairs.
    bath = next(i for i, line in enumerate(lines) if line.endswith("pairs 4 from reference_sensor"))
    b0, b1 = json.loads(lines[bath + 1])
    assert abs(b0 + b1 * 150.0 - 150.0) < 0.5 and b1 == pytest.approx(1.0, abs=0.01)
    assert lines[bath + 2] == "v3"
    # Profile versions over time: three stored, v2 from the third reading on (one stored
    # reading to reprocess), a straddling batch stored once and answered alike twice.
    assert lines[bath + 3 : bath + 7] == ["3", "1", "3", "v2"]
    readings = [line.split()[1:] for line in lines if line.startswith("reading ")]
    v1 = lambda raw: 2.6 * raw - 260  # noqa: E731
    v2 = lambda raw: 2.5 * raw - 250  # noqa: E731
    want = [(110.0, v1, "v1"), (111.0, v1, "v1"), (111.5, v1, "v1"), (112.0, v1, "v1")]
    want += [(114.0, v2, "v2"), (115.0, v2, "v2")]
    assert len(readings) == len(want)
    for (raw, value, version), (want_raw, convert, want_version) in zip(
        readings, want, strict=True
    ):
        assert float(raw) == want_raw and version == want_version
        assert float(value) == pytest.approx(convert(want_raw))
    versions = [line.split()[1:] for line in lines if line.startswith("version ")]
    assert versions[0] == ["v1", "1970-01-01T00:00:00Z"] and versions[1][0] == "v2"


def test_recalibrating_history_reprocesses_and_keeps_both_values(
    cloud: CloudServer, tmp_path: Path
) -> None:
    """The section's own answers (the whole page runs: it builds on the oven's readings)."""
    script = ["set -euo pipefail"]
    for i, body in enumerate(bash_blocks(), start=1):
        script += [f"echo '{MARK} {i}' >&2", body]
    env = {**os.environ, "BASE": cloud.url, "TMPDIR": str(tmp_path)}
    env["PATH"] = without_venv(env["PATH"])
    lines = run_as_new_user(script, env, MARK, timeout=120).stdout.splitlines()
    assert "job succeeded 6 6 4 2 0 v1,v2" in lines
    raws = [110.0, 111.0, 111.5, 112.0, 114.0, 115.0]
    now = [line.split()[1:] for line in lines if line.startswith("now ")]
    assert [(float(r), float(v), ver) for r, v, ver in now] == [
        (r, pytest.approx(2.5 * r - 250), "v2") for r in raws
    ]
    first = [line.split()[1:] for line in lines if line.startswith("first ")]
    v1 = lambda raw: 2.6 * raw - 260  # noqa: E731
    v2 = lambda raw: 2.5 * raw - 250  # noqa: E731
    want = [(r, v1(r), "v1") for r in raws[:4]] + [(r, v2(r), "v2") for r in raws[4:]]
    assert [(float(r), float(v), ver) for r, v, ver in first] == [
        (r, pytest.approx(v), ver) for r, v, ver in want
    ]
    header = lines.index("raw_value,value,profile_version")
    assert lines[header + 1 : header + 3] == [
        f"{raws[0]!r},{v2(raws[0])!r},v2",
        f"{raws[1]!r},{v2(raws[1])!r},v2",
    ]
