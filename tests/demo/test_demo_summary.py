"""What bin/demo.py prints for a person: the summary's counts, the live stream commands, and
how to come back to the demo's database, each checked against a live cloud."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import demo
import httpx
import pytest
from demo_feed import log_metrics
from demo_report import guide, summarize
from demo_scene import Scene, set_the_scene
from demo_seed import Api, seed
from websockets.sync.client import connect

from tests.demo.conftest import REPO
from tests.support.cloud import CloudServer
from tests.support.services import free_port, wait_port


@pytest.fixture
def scene(cloud: CloudServer, tmp_path: Path) -> Iterator[tuple[Api, Scene]]:
    owner = str(uuid.uuid4())
    seeded = seed(cloud.url, owner, need_tokens=True, tokens_file=tmp_path / "tokens.json")
    api = Api(cloud.url, owner, seeded.project_id)
    try:
        yield api, set_the_scene(api, seeded)
    finally:
        api.close()


def test_the_summary_counts_every_event_not_one_page(
    scene: tuple[Api, Scene],
) -> None:
    """The summary read one page of 1,000 events: 77 metrics events printed, 107 stored."""
    api, s = scene
    for step in range(1, 1052):
        log_metrics(api, s.run_id, range(step, step + 1))
    summary = summarize(api, s)
    every = api.items(f"/api/v1/experiments/{s.experiment_id}/events", limit=1000)
    assert len(every) > 1051
    assert summary["events"] == dict(Counter(e["kind"] for e in every))
    assert summary["events"]["metrics.logged"] == 1051


def test_the_printed_live_stream_commands_connect(
    scene: tuple[Api, Scene], capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed ws:// URL answered 401: it had no ticket."""
    api, s = scene
    guide(api, api.base_url, s, None)
    out = capsys.readouterr().out
    ws_url = re.search(r"live stream (ws://\S+)", out)
    assert ws_url and "ticket=" in ws_url[1]
    with connect(ws_url[1], open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
    assert hello["type"] == "subscribed" and hello["filter"]["sensor_id"] == s.sensor_id

    sse = re.search(r"as SSE: (curl .*?)\\\n\s+('http\S+')", out)
    assert sse, out
    argv = [*shlex.split(f"{sse[1]} {sse[2]}"), "--max-time", "3", "-sS"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert "event: subscribed" in proc.stdout, proc.stdout + proc.stderr


def test_the_printed_command_serves_the_demo_database_again(tmp_path: Path) -> None:
    """After DURATION nothing said how to browse the demo's database again."""
    owner = str(uuid.uuid4())
    port = free_port()
    database = f"sqlite:///{tmp_path / 'demo.db'}"
    args = demo.parser().parse_args(["--port", str(port), "--database-url", database])
    argv = shlex.split(demo.browse_again(args, owner))
    proc = subprocess.Popen([*argv, "--log-level", "warning"], cwd=REPO)
    try:
        assert wait_port("127.0.0.1", port, timeout=30), "the printed command serves nothing"
        config = httpx.get(f"http://127.0.0.1:{port}/portal/config.json").json()
        assert config["dev_identity"] is True
        assert config["default_identity"] == {
            "user": owner,
            "project": "demo_project",
            "role": "owner",
        }
    finally:
        proc.terminate()
        proc.wait(10)
