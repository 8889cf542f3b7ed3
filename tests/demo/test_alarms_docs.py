"""docs/alarms.md is executable: its ``bash`` blocks run, in order, in one shell (a new user's,
no venv activated), against a live cloud; what they print is what the page says they print.
Its ``python`` block is the webhook receiver those blocks run (``docs/webhook_receiver.py``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.demo.conftest import REPO
from tests.demo.test_docs import FENCE, run_as_new_user
from tests.support.cloud import CloudServer

DOC = REPO / "docs" / "alarms.md"
MARK = "### docs/alarms.md block"


def test_the_page_runs_and_prints_what_it_says(cloud: CloudServer, tmp_path: Path) -> None:
    text = DOC.read_text()
    blocks = [body for lang, body in FENCE.findall(text) if lang == "bash"]
    assert len(blocks) == 5
    script = ["set -euo pipefail"]
    for i, body in enumerate(blocks, start=1):
        script += [f"echo '{MARK} {i}' >&2", body]
    env = {**os.environ, "BASE": cloud.url, "TMPDIR": str(tmp_path)}
    lines = run_as_new_user(script, env, MARK, timeout=120).stdout.splitlines()
    assert lines == [
        '{"field": "threshold", "reason": "is required by above rules"}',
        "857.0",
        "acknowledged",
        "cleared",
        "alarm.raised alarm.acknowledged alarm.cleared",
        '{"field": "url", "reason": "must be http or https, not ftp"}',
        "401",
        "alarm.raised",
        "alarm.acknowledged",
        "delivered",
    ]
    # The page quotes those outputs as it says them.
    for line in lines:
        assert re.search(re.escape(f"`{line}`"), text), line


def test_the_receiver_on_the_page_is_the_one_it_runs() -> None:
    [receiver] = [body for lang, body in FENCE.findall(DOC.read_text()) if lang == "python"]
    assert receiver == (REPO / "docs" / "webhook_receiver.py").read_text()
