"""Metrics that survive an outage: queued in a local SQLite file while the server is away
and sent exactly once when it is back, even after the notebook was killed (kill -9)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchlink import Client, Retry
from tests.client.conftest import QUICK, new_project
from tests.support.cloud import REPO, CloudServer


@pytest.fixture(autouse=True)
def _cloud_back_up(cloud: CloudServer) -> Iterator[None]:
    """These tests take the module's cloud down; whatever happens, the next finds it up."""
    yield
    if cloud.proc is None:
        cloud.start()


def _steps(client: Client, run_id: str) -> list[int]:
    frame = client.runs.get(run_id).metrics("loss")
    return sorted(int(s) for s in frame.index)


def test_points_queued_by_a_killed_notebook_arrive_once(cloud: CloudServer, tmp_path: Path) -> None:
    owner = new_project(cloud.url)
    run = owner.experiments.create("e").runs.create()
    outbox = tmp_path / "outbox"
    notebook = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.client.notebook",
            cloud.url,
            str(owner.config.user),
            str(owner.config.project),
            run.id,
            str(outbox),
            "50",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert notebook.stdout is not None and notebook.stdin is not None
        assert notebook.stdout.readline().strip() == "ready"
        cloud.stop()  # the server goes away before the points are sent
        notebook.stdin.write("go\n")
        notebook.stdin.flush()
        assert notebook.stdout.readline().split() == ["logged", "50"]
        notebook.send_signal(signal.SIGKILL)
        notebook.wait(10)
    finally:
        if notebook.poll() is None:
            notebook.kill()
            notebook.wait()
    cloud.start()  # back, on the same address and database

    cfg = owner.config
    with Client(
        cloud.url, user=cfg.user, project=cfg.project, offline_dir=outbox, retry=QUICK
    ) as later:
        assert later.send_offline() == 50
        assert later.send_offline() == 0
        assert later.metrics_logger.pending() == 0
    with owner:
        assert _steps(owner, run.id) == list(range(50))


class AnswersLost(httpx.BaseTransport):
    """The server acts on every metrics POST, but no answer ever comes back (the network
    broke on the way back); everything else passes."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/metrics"):
            self.posts += 1
            response.read()
            response.close()
            raise httpx.ReadError("no answer")
        return response


def test_a_batch_sent_without_an_answer_is_queued_with_its_key(
    cloud: CloudServer, tmp_path: Path
) -> None:
    """Without offline_dir the queue is the default one; the batch the server may have stored
    keeps its Idempotency-Key there, so the next client's send is answered from the record."""
    owner = new_project(cloud.url)
    run = owner.experiments.create("e").runs.create()
    lost = AnswersLost()
    cfg = owner.config
    with Client(
        cloud.url, user=cfg.user, project=cfg.project, retry=QUICK, transport=lost
    ) as first:
        first.runs.get(run.id).log_metrics({"loss": 0.5}, step=7)
        first.metrics_logger.flush()
        assert lost.posts >= 1 and first.metrics_logger.pending() == 1
    assert _steps(owner, run.id) == [7]  # the server had it all along

    with Client(cloud.url, user=cfg.user, project=cfg.project, retry=QUICK) as second:
        assert second.send_offline() == 1  # the replay of the stored answer
    with owner:
        assert _steps(owner, run.id) == [7]


def test_points_logged_while_the_server_is_down_go_out_when_it_is_back(
    cloud: CloudServer, tmp_path: Path
) -> None:
    owner = new_project(cloud.url)
    run_id = owner.experiments.create("e").runs.create().id
    cfg = owner.config
    patient = Retry(attempts=2, backoff=0.05, cap=0.1)
    with Client(
        cloud.url,
        user=cfg.user,
        project=cfg.project,
        offline_dir=tmp_path / "q",
        retry=patient,
        metrics_interval=0.2,
    ) as client:
        run = client.runs.get(run_id)
        cloud.stop()
        for step in range(3):
            run.log_metrics({"loss": 0.1 * step}, step=step)
        run.flush()  # the server is away: nothing raised, everything kept
        assert client.metrics_logger.pending() == 3
        cloud.start()
        run.flush()
        assert client.metrics_logger.pending() == 0
    with owner:
        assert _steps(owner, run_id) == [0, 1, 2]
