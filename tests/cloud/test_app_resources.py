"""An app that stops gives back what it opened: the suite runs hundreds of apps in one process,
and a deployment may build and stop apps too."""

from __future__ import annotations

import os

from tests.cloud.conftest import make_client


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_app_that_stops_closes_its_database_connections(database_url: str) -> None:
    def one_app() -> None:
        with make_client(database_url) as client:
            assert client.post(
                "/api/v1/projects",
                json={"name": "p"},
                headers={"X-User-Id": "00000000-0000-4000-8000-000000000001"},
            ).status_code in (201, 409)
            assert client.get("/readyz").status_code == 200

    one_app()  # imports and first-use caches
    before = open_descriptors()
    for _ in range(5):
        one_app()
    assert open_descriptors() - before <= 1
