"""docs/demo.md is executable: every ``bash`` block runs, in order, in one shell, against a live
cloud; the other blocks (``make demo``, docker compose) only use scripts and options that
exist. So the page cannot drift from the code."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.demo.conftest import REPO
from tests.support.cloud import CloudServer

DOC = REPO / "docs" / "demo.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARK = "### docs/demo.md block"


def blocks(language: str | None = None) -> list[str]:
    found = [(lang, body) for lang, body in FENCE.findall(DOC.read_text())]
    return [body for lang, body in found if language is None or lang == language]


def test_the_page_has_the_whole_scenario() -> None:
    text = "\n".join(blocks("bash"))
    for step in (
        "bin/migrate.py",
        "bin/demo_seed.py",
        "/api/v1/sensors",
        "/api/v1/experiments",
        "/capture-sessions",
        "bin/demo_sensor.py",
        "/api/v1/telemetry",
        "/telemetry/stream",
        "/stop",
        "/metrics",
        "metrics?name=loss",
        "-X PATCH",
        "/archive",
        "runs:batch-status",
        "bin/demo_replay.py",
    ):
        assert step in text, f"no bash block does {step}"
    assert "make demo" in "\n".join(blocks("sh"))


def test_images_and_files_it_names_exist() -> None:
    text = DOC.read_text()
    for image in re.findall(r"\]\((img/[^)]+)\)", text):
        assert (DOC.parent / image).is_file(), image
    for script in set(re.findall(r"bin/[\w.]+\.py", text)):
        assert (REPO / script).is_file(), script


def test_options_in_the_blocks_that_are_not_run_exist() -> None:
    """``make demo`` and the docker compose section cannot run here; their options must."""
    helps: dict[str, str] = {}
    for body in blocks("sh"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            scripts = [w for w in words if w.startswith("bin/") and w.endswith(".py")]
            demo_args = [w for w in words if w.startswith("DEMO_ARGS=")]
            if demo_args:  # make demo DEMO_ARGS="..." passes them to bin/demo.py
                scripts, words = ["bin/demo.py"], shlex.split(demo_args[0].split("=", 1)[1])
            for script in scripts:
                if script not in helps:
                    helps[script] = subprocess.run(
                        [sys.executable, str(REPO / script), "--help"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                for option in (w.split("=")[0] for w in words if w.startswith("--")):
                    assert option in helps[script], f"{script} has no {option}"
    assert {"bin/demo.py", "bin/demo_seed.py"} <= set(helps)


def without_venv(path: str) -> str:
    venv_bins = {str(Path(sys.executable).parent), str(REPO / ".venv" / "bin")}
    return os.pathsep.join(p for p in path.split(os.pathsep) if p not in venv_bins)


def run_as_new_user(
    script: list[str], env: dict[str, str], mark: str, timeout: int
) -> subprocess.CompletedProcess[str]:
    """A page's bash blocks (``script``, each after an ``echo '{mark} N' >&2``) in a new user's
    shell: the repository as the working directory, the venv not activated; a failing block
    fails the test naming it."""
    env = {**env, "PATH": without_venv(env["PATH"])}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        failed = [line for line in proc.stderr.splitlines() if line.startswith(mark)]
        pytest.fail(
            f"{failed[-1] if failed else 'before the first block'} failed "
            f"(exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


#: A program of the project (or an interpreter) called by name: only works in an activated
#: venv, which the pages never ask for ("No module named 'sqlalchemy'").
BARE_COMMAND = re.compile(r"(?:^|[;|&(]|\$\()\s*(python3?|benchlink-(?:cloud|edge|sim))\b")


def test_commands_in_the_docs_work_without_an_activated_venv() -> None:
    for page in (DOC, REPO / "README.md", REPO / "mosquitto" / "README.md"):
        for lang, body in FENCE.findall(page.read_text()):
            if lang not in ("bash", "sh"):
                continue
            for line in body.splitlines():
                found = BARE_COMMAND.search(line.split(" #")[0])
                assert found is None, f"{page.name}: {line.strip()!r} runs {found[1]} from PATH"


def test_product_docs_and_code_stand_on_their_own() -> None:
    """No pointers to documents that are not in the repository."""
    places = [REPO / "README.md", REPO / "Dockerfile", REPO / "docker-compose.yml"]
    for folder in ("docs", "cloud", "edge", "common", "hardware", "bin", "mosquitto"):
        places += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix != ".png"]
    for path in places:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for ref in ("SPEC §", "seeds/0", "../shared"):
            assert ref not in text, f"{path.relative_to(REPO)} refers to {ref!r}"


def test_every_bash_block_runs_against_a_live_cloud(cloud: CloudServer, tmp_path: Path) -> None:
    script = ["set -euo pipefail"]
    for i, body in enumerate(blocks("bash"), start=1):
        script += [f"echo '{MARK} {i}' >&2", body]
    # What the test checks afterwards: the ids the page's variables ended up with.
    script.append('echo "IDS $RUN $EXPERIMENT $WARMUP $SESSION $SENSOR $THERMAL_RUN"')
    env = {
        **os.environ,
        "BASE": cloud.url,
        "DATABASE_URL": cloud.database_url,
        "DEMO_DURATION": "3",
        "BENCHLINK_DEMO_OWNER": str(uuid.uuid4()),  # not the developer's var/demo_owner
        "TMPDIR": str(tmp_path),
        # A new user's shell: .venv not activated (the page calls .venv/bin/... by path).
        "PATH": without_venv(os.environ["PATH"]),
    }
    assert (REPO / ".venv" / "bin" / "python").exists(), "make install first"
    proc = run_as_new_user(script, env, MARK, timeout=240)
    ids = next(line for line in proc.stdout.splitlines() if line.startswith("IDS "))
    run, experiment, warmup, session, sensor, thermal_run = ids.split()[1:]
    out = proc.stdout
    assert "accepted" in out and "sent " in out  # demo_sensor's summaries
    assert '"accepted":1,"late":0' in out.replace(" ", "")  # the scenario's telemetry curl
    # 2.7's CSV replay stores every exported reading (none dropped as a duplicate).
    replayed = [json.loads(line) for line in out.splitlines() if line.startswith('{"capture_')]
    assert replayed[0]["sent"] > 0 and replayed[0]["accepted"] == replayed[0]["sent"]
    assert replayed[0]["duplicate"] == 0
    assert "running\n" in out and "succeeded\n" in out and "archived\n" in out

    owner = re.search(r"owner_user_id=(\S+)", out)
    project = re.search(r"project_id=(\S+)", out)
    assert owner and project
    h = {"X-User-Id": owner[1], "X-Project-Id": project[1], "X-Project-Role": "owner"}
    with httpx.Client(base_url=cloud.url, headers=h) as c:
        assert c.get(f"/api/v1/runs/{run}").json()["status"] == "succeeded"
        assert c.get(f"/api/v1/runs/{warmup}").json()["status"] == "cancelled"
        assert c.get(f"/api/v1/experiments/{experiment}").json()["status"] == "archived"
        stopped = c.get(f"/api/v1/runs/{run}/capture-sessions/{session}").json()
        assert stopped["status"] == "succeeded"
        series = c.get(
            "/api/v1/telemetry/series", params={"sensor_id": sensor, "run_id": run}
        ).json()
        # The curl, ~3 s of stream, and batch mode's captured data: only what fits in the
        # session (it started seconds before), not the 600 s asked for, nine of them before it.
        assert 1 + 25 + 30 <= series["total"] < 6000
        readings = c.get("/api/v1/telemetry", params={"run_id": run, "limit": 10000}).json()[
            "items"
        ]
        assert len(readings) == series["total"]
        assert min(r["timestamp"] for r in readings) >= stopped["started_at"]
        loss = c.get(f"/api/v1/runs/{run}/metrics", params={"name": "loss"}).json()
        assert [p["value"] for p in loss["points"]] == [0.42, 0.31]
        assert c.get(f"/api/v1/runs/{thermal_run}/metrics/summary").json()[0]["count"] == 20
