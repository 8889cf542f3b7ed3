"""A real cloud server on SQLite (one process: in-process fan-out), shared by the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live.helpers import TICKET_SECRET
from tests.support.cloud import Bench, CloudServer, bootstrap

#: Small enough that the slow-client test overflows a stalled client quickly.
QUEUE_SIZE = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    tmp = tmp_path_factory.mktemp("live")
    srv = CloudServer(
        f"sqlite:///{tmp / 'cloud.db'}",
        env={
            "BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET,
            "BENCHLINK_LIVE_QUEUE_SIZE": str(QUEUE_SIZE),
        },
        log_path=tmp / "server.log",
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def bench(server: CloudServer) -> Bench:
    """A fresh project (sensor, experiment, run, running session) on the shared server."""
    return bootstrap(
        server.url, profile={"version": "v1", "kind": "linear", "payload": {"a": 2.0, "b": 1.0}}
    )
