"""Helpers for live-stream tests: ingest through the API, read WebSocket and SSE events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection

from tests.support.cloud import Bench

TICKET_SECRET = "live-tests-shared-ticket-secret"


#: each sensor's last timestamp given (see :func:`stamps`)
_last: dict[str, datetime] = {}


def stamps(n: int, *, ago_s: float = 60.0, sensor: str = "") -> list[str]:
    """``n`` increasing timestamps in the recent past (a millisecond apart), after the last
    ones given for ``sensor``: two batches sent within their own span (100 readings span
    100 ms) would otherwise share timestamps, which the cloud refuses (one reading per sensor
    and timestamp)."""
    base = datetime.now(UTC) - timedelta(seconds=ago_s)
    if sensor in _last:
        base = max(base, _last[sensor] + timedelta(milliseconds=1))
    out = [base + timedelta(milliseconds=i) for i in range(n)]
    if out:
        _last[sensor] = out[-1]
    return [t.isoformat() for t in out]


async def ingest(
    base_url: str,
    bench: Bench,
    values: Sequence[float],
    *,
    sensor_id: str | None = None,
    token: str | None = None,
    run_id: str | None = None,
    capture_session_id: str | None = None,
    ago_s: float = 60.0,
) -> dict[str, Any]:
    body = {
        "sensor_id": sensor_id or bench.sensor_id,
        "run_id": run_id or bench.run_id,
        "capture_session_id": capture_session_id or bench.capture_session_id,
        "readings": [
            {"timestamp": ts, "raw_value": v}
            for ts, v in zip(
                stamps(len(values), ago_s=ago_s, sensor=sensor_id or bench.sensor_id),
                values,
                strict=True,
            )
        ],
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        r = await c.post(
            "/api/v1/telemetry",
            json=body,
            headers={"Authorization": f"Bearer {token or bench.token}"},
        )
    assert r.status_code == 202, r.text
    result: dict[str, Any] = r.json()
    return result


def ws_url(base_url: str, **params: str) -> str:
    return base_url.replace("http://", "ws://") + "/api/v1/telemetry/stream?" + urlencode(params)


async def next_message(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        msg: dict[str, Any] = json.loads(await ws.recv())
    return msg


async def readings(ws: ClientConnection, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``n`` reading messages (anything else is a failure)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            msg = json.loads(await ws.recv())
            assert msg["type"] == "reading", msg
            out.append(msg)
    return out


async def nothing_more(ws: ClientConnection, wait: float = 0.5) -> None:
    try:
        async with asyncio.timeout(wait):
            extra = await ws.recv()
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {extra!r}")


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse ``text/event-stream`` into dicts with ``event``, ``id`` and decoded ``data``."""
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            event[key] = value[1:] if value.startswith(" ") else value


async def take(events: AsyncIterator[dict[str, Any]], n: int, timeout: float = 10.0) -> list[Any]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(events))
    return out


def register_sensor(bench: Bench, *, a: float = 1.0, b: float = 0.0) -> tuple[str, str]:
    """A second sensor in the bench's project: (sensor_id, token)."""
    with bench.client() as c:
        r = c.post(
            "/api/v1/sensors",
            json={
                "project_id": bench.project_id,
                "name": f"s-{uuid.uuid4().hex[:6]}",
                "type": "thermocouple",
                "input_unit": "mV",
                "display_unit": "C",
                "conversion_profile": {
                    "version": "v1",
                    "kind": "linear",
                    "payload": {"a": a, "b": b},
                },
            },
        )
        r.raise_for_status()
        return r.json()["sensor"]["id"], r.json()["token"]
