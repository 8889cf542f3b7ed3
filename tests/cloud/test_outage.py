"""The database going away is a 503 with Retry-After (and a clean recovery), never a 500;
/readyz is ready only on a database migrated to this code's head."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import WebSocketDenialResponse

from cloud.migrate import downgrade, upgrade
from tests.cloud.conftest import Api, assert_problem, make_client
from tests.support.services import PG_ADMIN_DSN


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_DSN, autocommit=True)


@pytest.fixture
def migrated_pg(pg_url: str) -> Iterator[str]:
    upgrade(pg_url)
    yield pg_url
    with _admin() as admin:  # let the fixture drop it whatever happened
        admin.execute(f'ALTER DATABASE "{make_url(pg_url).database}" WITH ALLOW_CONNECTIONS true')


def test_a_postgres_outage_is_503_with_retry_after_then_recovers(migrated_pg: str) -> None:
    name = make_url(migrated_pg).database
    with make_client(migrated_pg) as client:
        api = Api(client)
        owner = api.project()
        exp = api.experiment(owner)
        assert api.get("/readyz").status_code == 200
        ids = api.stack(owner)
        ticket = client.post("/api/v1/stream-tickets", headers=owner.headers()).json()["ticket"]
        with _admin() as admin:
            # The database refuses new connections and every open one is cut.
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        calls = [
            ("GET", "/api/v1/experiments", None),
            ("GET", f"/api/v1/experiments/{exp}", None),
            ("POST", "/api/v1/experiments", {"project_id": owner.project_id, "name": "x"}),
            ("POST", f"/api/v1/experiments/{exp}/runs", None),
        ]
        for method, path, body in calls:
            kw = {"json": body} if body is not None else {}
            r = client.request(method, path, headers=owner.headers(), **kw)
            problem = assert_problem(r, 503)
            assert int(r.headers["retry-after"]) > 0, r.headers
            assert "database" in problem["detail"] and "Traceback" not in r.text
        # The same with an Idempotency-Key (claimed in the database before the route runs).
        h = {**owner.headers(), "Idempotency-Key": "during-outage"}
        r = client.post("/api/v1/experiments", json={"name": "y"}, headers=h)
        assert_problem(r, 503)
        assert client.get("/readyz").status_code == 503
        # The live streams: SSE with headers, a WebSocket with a ticket.
        sse = f"/api/v1/telemetry/stream/sse?run_id={ids['run_id']}"
        assert_problem(client.get(sse, headers=owner.headers()), 503)
        ws = f"/api/v1/telemetry/stream?run_id={ids['run_id']}&ticket={ticket}"
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect(ws):
            pass
        assert_problem(denied.value, 503)
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        assert api.get("/api/v1/experiments", headers=owner.headers()).status_code == 200
        assert client.post("/api/v1/experiments", json={"name": "y"}, headers=h).status_code == 201
        assert client.get("/readyz").status_code == 200


def test_an_unreachable_server_after_startup_is_503() -> None:
    # Nothing listens on port 1.
    with make_client("postgresql://postgres@127.0.0.1:1/none") as client:
        r = client.get(
            "/api/v1/projects", headers={"X-User-Id": "8d1c5e0e-0000-4000-8000-000000000000"}
        )
    assert_problem(r, 503)
    assert r.headers["retry-after"]


def test_readyz_needs_the_schema_at_head(database_url: str, tmp_path: Path) -> None:
    """``database_url`` is migrated to head: ready. An older schema, or none: 503, saying
    to run the migrations."""
    with make_client(database_url) as client:
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
    downgrade(database_url, "0003")
    with make_client(database_url) as client:
        r = client.get("/readyz")
    assert r.status_code == 503, r.text
    assert "0003" in r.json()["detail"] and "migrat" in r.json()["detail"]
    upgrade(database_url)
    with make_client(database_url) as client:
        assert client.get("/readyz").status_code == 200


def test_readyz_on_a_never_migrated_database(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, f"sqlite:///{tmp_path / 'empty.db'}"):
        with make_client(url) as client:
            r = client.get("/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unavailable" and "never migrated" in body["detail"]
        assert "run the migrations" in body["detail"]


def test_background_tasks_say_an_outage_in_one_line_each_and_its_end(
    migrated_pg: str, tmp_path: Path
) -> None:
    """A real server's periodic tasks (reprocess runner, webhook delivery, fleet health) and
    its live LISTEN connection while PostgreSQL refuses connections: one warning line each
    when they meet it, one when it is back, no traceback or line every round."""
    from tests.support.cloud import CloudServer

    name = make_url(migrated_pg).database
    log = tmp_path / "cloud.log"
    env = {"BENCHLINK_REPROCESS_EVERY_S": "0.3", "BENCHLINK_WEBHOOK_EVERY_S": "0.3",
           "BENCHLINK_HEALTH_EVERY_S": "0.3"}  # fmt: skip
    tasks = ("reprocess runner", "webhook delivery", "fleet health evaluation")
    with CloudServer(migrated_pg, env=env, log_path=log):
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        _wait_for(log, [f"{t}: the database is out of reach" for t in tasks])
        time.sleep(2)  # several more rounds of each, still refused
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        _wait_for(log, [f"{t}: the database is back" for t in tasks])
        _wait_for(log, ["live LISTEN connection back"])
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    for t in tasks:
        assert text.count(f"{t}: the database is out of reach") == 1, text[-3000:]
    assert text.count("live LISTEN connection lost") == 1, text[-3000:]


def _wait_for(log: Path, needles: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if all(n in text for n in needles):
            return
        time.sleep(0.1)
    raise AssertionError(f"not logged: {[n for n in needles if n not in text]}\n{text[-3000:]}")
