"""A graceful stop (SIGTERM, as ``systemctl stop`` sends) ends open live streams at once.

The server waits for open responses before it stops, and an event stream never ends by
itself: an SSE client used to hold the stop until the process was killed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

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
