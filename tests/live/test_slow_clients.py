"""A client that stops reading never slows ingest or the other clients: it is cut off."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from typing import Any

from websockets.asyncio.client import connect

from tests.live.conftest import QUEUE_SIZE
from tests.live.helpers import ingest, next_message, readings, ws_url
from tests.support.cloud import Bench, CloudServer

BATCH = 2500
BATCHES = 6  # 15,000 events: several MB, far beyond a stalled client's queue and buffers


def _stalled(
    server: CloudServer, path: str, headers: dict[str, str], upgrade: bool
) -> socket.socket:
    """Open a stream with a tiny receive buffer, then never read from it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = sock.recv(1024)
    assert head.startswith(b"HTTP/1.1 101" if upgrade else b"HTTP/1.1 200"), head
    return sock


def _drain_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Read what the server sent until it closes the connection."""
    sock.settimeout(timeout)
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


async def test_a_stalled_client_is_dropped_without_slowing_ingest_or_others(
    server: CloudServer, bench: Bench
) -> None:
    ws_path = f"/api/v1/telemetry/stream?sensor_id={bench.sensor_id}"
    sse_path = f"/api/v1/telemetry/stream/sse?sensor_id={bench.sensor_id}"
    stalled = [
        _stalled(server, ws_path, bench.headers, upgrade=True),
        _stalled(server, sse_path, bench.headers, upgrade=False),
    ]
    url = ws_url(server.url, sensor_id=bench.sensor_id)
    async with connect(url, additional_headers=bench.headers, max_size=None) as healthy:
        assert (await next_message(healthy))["type"] == "subscribed"
        received: list[dict[str, Any]] = []
        reader = asyncio.create_task(readings(healthy, BATCH * BATCHES, timeout=60))
        post_times = []
        for k in range(BATCHES):
            started = time.perf_counter()
            await ingest(server.url, bench, [float(k * BATCH + i) for i in range(BATCH)])
            post_times.append(time.perf_counter() - started)
        received = await reader

    assert [m["raw_value"] for m in received] == [float(i) for i in range(BATCH * BATCHES)]
    # Ingest took as long with stalled subscribers as a POST of this size ever does.
    assert max(post_times) < 3.0, post_times
    assert BATCH * BATCHES > QUEUE_SIZE
    for sock in stalled:
        tail = await asyncio.to_thread(_drain_until_closed, sock, 15.0)
        sock.close()
        # Cut off long before the 15,000 events (each is over 300 bytes on the wire).
        assert len(tail) < BATCH * BATCHES * 300, len(tail)
