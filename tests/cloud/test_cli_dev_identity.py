"""``benchlink-cloud serve --dev-identity-user``: a bad value is one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.support.cloud import REPO


def test_a_bad_dev_identity_user_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "serve", "--dev-identity", "--dev-identity-user", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--dev-identity-user" in lines[0] and "UUID" in lines[0]
