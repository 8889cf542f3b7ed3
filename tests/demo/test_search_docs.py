"""docs/search.md is executable: its ``bash`` blocks run, in order, in one shell, against a live
cloud, and every query of its examples table is then sent to that cloud: each must find the
runs the table lists, in that order, over all pages. Its 422 example is the server's own;
its comparison answers what the runs read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx

from tests.demo.conftest import REPO
from tests.demo.test_docs import FENCE, run_as_new_user, without_venv
from tests.support.cloud import CloudServer

DOC = REPO / "docs" / "search.md"
MARK = "### docs/search.md block"
ROW = re.compile(r"^\| `(?P<query>[^`]+)` \| (?P<finds>[^|]+) \|$", re.MULTILINE)


def bash_blocks() -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == "bash"]


def examples() -> list[tuple[str, list[str]]]:
    rows = []
    for m in ROW.finditer(DOC.read_text()):
        finds = m["finds"].strip()
        rows.append((m["query"], [] if finds == "—" else [n.strip() for n in finds.split(",")]))
    return rows


def run_blocks(cloud: CloudServer, tmp_path: Path) -> list[str]:
    script = ["set -euo pipefail"]
    for i, body in enumerate(bash_blocks(), start=1):
        script += [f"echo '{MARK} {i}' >&2", body]
    script.append('echo "IDENTITY $OWNER $PROJECT"')  # for the table's queries below
    env = {**os.environ, "BASE": cloud.url, "TMPDIR": str(tmp_path)}
    env["PATH"] = without_venv(env["PATH"])
    proc = run_as_new_user(script, env, MARK, timeout=120)
    return proc.stdout.splitlines()


def found(client: httpx.Client, query: str) -> list[str]:
    names: list[str] = []
    url = f"/api/v1/runs?{query}"
    while True:
        r = client.get(url)
        assert r.status_code == 200, (query, r.text)
        names += [run["name"] for run in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return names
        url = f"/api/v1/runs?{query}&cursor={cursor}"


def test_the_page_has_examples_of_every_kind_of_term() -> None:
    queries = " ".join(q for q, _ in examples())
    for kind in ("param.", "metric.", "telemetry.", "tag=", "status=", "sort=-", "limit="):
        assert kind in queries, f"no example uses {kind}"
    assert len(examples()) >= 15


def test_every_example_finds_what_the_page_says(cloud: CloudServer, tmp_path: Path) -> None:
    lines = run_blocks(cloud, tmp_path)
    assert lines[:2] == ["ramp-400-a", "ramp-400-a"], lines  # the search, both ways
    assert lines[2] == "431.0", lines  # compared: ramp-420's third furnace reading
    _, owner, project = lines[-1].split()
    headers = {"X-User-Id": owner, "X-Project-Id": project, "X-Project-Role": "viewer"}
    with httpx.Client(base_url=cloud.url, headers=headers, timeout=30) as client:
        wrong = [
            (query, want, got)
            for query, want in examples()
            if (got := found(client, query)) != want
        ]
        assert not wrong, "\n".join(f"{q}: page says {w}, found {g}" for q, w, g in wrong)
        r = client.get("/api/v1/runs?metric.loss.avg<1")
        assert r.status_code == 422
        assert f'"detail": "{r.json()["detail"]}"' in DOC.read_text()
