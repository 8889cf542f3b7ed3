"""docs/export.md is executable: its ``bash`` blocks run, in order, in one shell, against a
live cloud, and what they print is what the page says they do."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

from tests.demo.conftest import REPO
from tests.demo.test_docs import FENCE, without_venv
from tests.support.cloud import CloudServer

DOC = REPO / "docs" / "export.md"


def test_the_export_page_runs_against_a_live_cloud(cloud: CloudServer, tmp_path: Path) -> None:
    bodies = [body for lang, body in FENCE.findall(DOC.read_text()) if lang == "bash"]
    assert len(bodies) == 3
    env = {
        **os.environ,
        "BASE": cloud.url,
        "BENCHLINK_DEMO_OWNER": str(uuid.uuid4()),
        "TMPDIR": str(tmp_path),
        "PATH": without_venv(os.environ["PATH"]),
    }
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["bash", "-c", "\n".join(["set -euo pipefail", *bodies])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    files = set(re.findall(r"^(\S+\.(?:parquet|arrows|csv))$", out, re.MULTILINE))
    assert {f.rsplit(".", 1)[1] for f in files} == {"parquet", "arrows", "csv"}, out
    assert "run: baseline of Furnace calibration" in out
    assert "readings: 2" in out and "metrics: loss 1" in out
    assert "'value_unit':" in out
