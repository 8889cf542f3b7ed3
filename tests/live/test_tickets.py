"""Stream tickets: issued by an authenticated POST, signed, short-lived, project-bound."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from cloud.errors import Unauthenticated
from cloud.identity import Principal, Role
from cloud.live import tickets
from tests.live.helpers import TICKET_SECRET, ingest, next_message, readings, ws_url
from tests.support.cloud import Bench, CloudServer, bootstrap

SECRET = TICKET_SECRET.encode()
WHO = Principal(user_id=uuid.uuid4(), project_id=uuid.uuid4(), role=Role.viewer)


def test_a_ticket_round_trips_and_expires() -> None:
    t = tickets.issue(SECRET, WHO, ttl_s=60, now=1000.0)
    assert tickets.verify(SECRET, t.text, now=1059.0) == WHO
    with pytest.raises(Unauthenticated, match="expired"):
        tickets.verify(SECRET, t.text, now=1060.0)


def test_a_tampered_or_foreign_ticket_is_refused() -> None:
    t = tickets.issue(SECRET, WHO).text
    payload, _, signature = t.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["r"] = "owner"  # promote oneself without the secret
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    for bad in (f"{forged}.{signature}", t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), payload, ""):
        with pytest.raises(Unauthenticated):
            tickets.verify(SECRET, bad)
    with pytest.raises(Unauthenticated):
        tickets.verify(b"another deployment", t)


async def _ticket(server: CloudServer, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as c:
        return await c.post("/api/v1/stream-tickets", headers=headers)


async def test_a_browser_streams_with_a_ticket_and_no_headers(
    server: CloudServer, bench: Bench
) -> None:
    viewer = {**bench.headers, "X-Project-Role": "viewer"}
    r = await _ticket(server, viewer)
    assert r.status_code == 201, r.text
    assert 55 <= r.json()["expires_in"] <= 60
    url = ws_url(server.url, run_id=bench.run_id, ticket=r.json()["ticket"])
    async with connect(url) as ws:
        assert (await next_message(ws))["type"] == "subscribed"
        await ingest(server.url, bench, [4.0])
        assert (await readings(ws, 1))[0]["raw_value"] == 4.0
    fresh = (await _ticket(server, viewer)).json()["ticket"]  # one ticket, one stream
    async with (
        httpx.AsyncClient(base_url=server.url) as c,
        c.stream(
            "GET",
            "/api/v1/telemetry/stream/sse",
            params={"run_id": bench.run_id, "ticket": fresh},
        ) as sse,
    ):
        assert sse.status_code == 200


async def test_tickets_need_identity_and_expired_or_tampered_ones_are_refused(
    server: CloudServer, bench: Bench
) -> None:
    assert (await _ticket(server, {})).status_code == 401
    who = Principal(uuid.UUID(bench.owner_user_id), uuid.UUID(bench.project_id), Role.owner)
    expired = tickets.issue(SECRET, who, now=time.time() - 61).text
    good = tickets.issue(SECRET, who).text
    tampered = good[:-3] + ("xyz" if not good.endswith("xyz") else "abc")
    for bad in (expired, tampered):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server.url, run_id=bench.run_id, ticket=bad)):
                pass
        assert refused.value.response.status_code == 401
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.get(
                "/api/v1/telemetry/stream/sse", params={"run_id": bench.run_id, "ticket": bad}
            )
        assert r.status_code == 401


async def test_a_ticket_is_bound_to_its_project(server: CloudServer, bench: Bench) -> None:
    stranger = bootstrap(server.url)
    ticket = (await _ticket(server, bench.headers)).json()["ticket"]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server.url, sensor_id=stranger.sensor_id, ticket=ticket)):
            pass
    assert refused.value.response.status_code == 404


def test_a_ticket_opens_one_stream_only_across_processes(tmp_path: Path, pg_url: str) -> None:
    """A used ticket is refused by every API process (they share the database), on either
    stream endpoint, and no ticket reaches the access log."""
    env = {"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET}
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with (
        CloudServer(pg_url, env=env, log_path=log_a, log_level="info") as a,
        CloudServer(pg_url, env=env, log_path=log_b, log_level="info") as b,
    ):
        bench = bootstrap(a.url)
        issued = []

        async def scenario() -> None:
            r = await _ticket(a, bench.headers)
            ticket = r.json()["ticket"]
            issued.append(ticket)
            async with connect(ws_url(a.url, run_id=bench.run_id, ticket=ticket)) as ws:
                assert (await next_message(ws))["type"] == "subscribed"
            for server in (a, b):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(ws_url(server.url, run_id=bench.run_id, ticket=ticket)):
                        pass
                assert refused.value.response.status_code == 401
                assert b"already used" in refused.value.response.body
            sse_ticket = (await _ticket(a, bench.headers)).json()["ticket"]
            issued.append(sse_ticket)
            params = {"run_id": bench.run_id, "ticket": sse_ticket}
            async with (
                httpx.AsyncClient(base_url=b.url) as c,
                c.stream("GET", "/api/v1/telemetry/stream/sse", params=params) as sse,
            ):
                assert sse.status_code == 200
            async with httpx.AsyncClient(base_url=a.url) as c:
                again = await c.get("/api/v1/telemetry/stream/sse", params=params)
            assert again.status_code == 401 and "already used" in again.json()["detail"]

        asyncio.run(scenario())
    logs = log_a.read_text() + log_b.read_text()
    assert "/api/v1/telemetry/stream/sse?" in logs and "ticket=[redacted]" in logs, logs
    for ticket in issued:
        assert ticket.split(".")[0] not in logs and ticket.split(".")[1] not in logs


def test_the_workers_of_one_server_take_each_others_tickets(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --workers 2`` with no ticket secret configured: every ticket opens its stream,
    whichever worker issued it and whichever one the stream reaches."""
    monkeypatch.delenv("BENCHLINK_STREAM_TICKET_SECRET", raising=False)
    with CloudServer(pg_url, workers=2, log_path=tmp_path / "cloud.log") as server:
        bench = bootstrap(server.url)

        async def scenario() -> list[int]:
            answers = []
            for _ in range(12):  # each on new connections: the kernel spreads them
                ticket = (await _ticket(server, bench.headers)).json()["ticket"]
                params = {"run_id": bench.run_id, "ticket": ticket}
                async with (
                    httpx.AsyncClient(base_url=server.url) as c,
                    c.stream("GET", "/api/v1/telemetry/stream/sse", params=params) as sse,
                ):
                    answers.append(sse.status_code)
            return answers

        assert asyncio.run(scenario()) == [200] * 12
    assert "valid only on the process that issued them" not in (tmp_path / "cloud.log").read_text()
