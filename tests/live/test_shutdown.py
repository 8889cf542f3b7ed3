"""A graceful stop (SIGTERM, as ``systemctl stop`` sends) ends open live streams at once.

The server waits for open responses before it stops, and an event stream never ends by
itself: an SSE client used to hold the stop until the process was killed. A stream asked for
while the server stops is told to come back (503, Retry-After), never a 500: a client that
reconnected at that moment read uvicorn's 500 as a fault of its own and stopped following."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import WebSocketDenialResponse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cloud import wsproto
from cloud.migrate import upgrade
from tests.cloud.conftest import Api, assert_problem, make_client
from tests.live.helpers import TICKET_SECRET, next_message, sse_events, take, ws_url
from tests.support.cloud import Bench, CloudServer, bootstrap

#: Only a bound for a broken build, which would otherwise hang the test.
NEVER = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CloudServer]:
    srv = CloudServer(
        f"sqlite:///{tmp_path / 'cloud.db'}",
        env={"BENCHLINK_STREAM_TICKET_SECRET": TICKET_SECRET},
        log_path=tmp_path / "server.log",
    ).start()
    try:
        yield srv
    finally:
        srv.kill()


async def _exited(server: CloudServer) -> None:
    assert server.proc is not None
    code = await asyncio.to_thread(server.proc.wait, NEVER)
    # uvicorn re-raises the signal it handled once it has shut down gracefully.
    assert code in (0, -signal.SIGTERM), code


async def test_sigterm_ends_an_open_sse_stream_and_the_server_exits(server: CloudServer) -> None:
    bench: Bench = bootstrap(server.url)
    assert server.proc is not None
    path = f"/api/v1/telemetry/stream/sse?sensor_id={bench.sensor_id}"
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=None) as client,
        client.stream("GET", path, headers=bench.headers) as response,
    ):
        events = sse_events(response)
        assert (await take(events, 1))[0]["event"] == "subscribed"
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(NEVER):
            rest = [event async for event in events]  # the response ends
        assert rest == []
    await _exited(server)


async def test_sigterm_closes_an_open_websocket_with_going_away(server: CloudServer) -> None:
    bench = bootstrap(server.url)
    assert server.proc is not None
    url = ws_url(server.url, sensor_id=bench.sensor_id)
    async with connect(url, additional_headers=bench.headers) as ws:
        assert (await next_message(ws))["type"] == "subscribed"
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(NEVER):
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001  # going away: resume elsewhere or later
    await _exited(server)


def test_a_stream_asked_for_while_the_server_stops_is_told_to_come_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    with make_client(url) as client:
        api = Api(client)
        owner = api.project()
        run_id = api.stack(owner)["run_id"]
        api.services.live_hub.close_streams()  # what SIGTERM does first
        sse = client.get(f"/api/v1/telemetry/stream/sse?run_id={run_id}", headers=owner.headers())
        problem = assert_problem(sse, 503)
        assert "shutting down" in problem["detail"] and sse.headers["retry-after"] == "1"
        ws = f"/api/v1/telemetry/stream?run_id={run_id}"
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect(ws, headers=owner.headers()),
        ):
            pass
        assert_problem(denied.value, 503)
        assert denied.value.headers["retry-after"] == "1"


async def test_a_handshake_in_the_app_when_the_server_stops_is_503_not_500() -> None:
    # uvicorn with the cloud's protocol, and an app held in the handshake (as a stream is
    # while its filter is checked in the database) when the server is told to stop.
    in_handshake, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        in_handshake.set()
        await release.wait()
        with contextlib.suppress(Exception):  # the connection is gone by then
            await send({"type": "websocket.accept"})

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=wsproto.IMPORT_PATH, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(NEVER):
        while not server.started:
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    async def handshake() -> None:
        async with connect(f"ws://127.0.0.1:{port}/api/v1/telemetry/stream"):
            pass

    attempt = asyncio.create_task(handshake())
    async with asyncio.timeout(NEVER):
        await in_handshake.wait()
        server.should_exit = True
        with pytest.raises(InvalidStatus) as refused:
            await attempt
        release.set()
        await serving
    response = refused.value.response
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Retry-After"] == "1"
    assert "shutting down" in json.loads(response.body)["detail"]
