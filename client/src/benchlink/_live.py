"""``client.live()``: readings from the WebSocket stream, resumed after a dropped connection.

The server gives every reading an event id and, asked with ``?last_event_id=``, sends the
readings after it before following live again. So the client remembers the id of the last
reading it handed out and reconnects with it (after a jittered, capped wait): the stream
goes on with the next reading, none missed and none twice. Before the first reading, the
resume point is the ``id`` of the ``subscribed`` message (the commit position where the
stream started), so readings stored while a connection that never carried one was down are
not missed either. If the server no longer knows that point (too far behind), the stream
says ``reset`` and :class:`LiveReset` is raised.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from benchlink import _times
from benchlink._exceptions import LiveReset, error_for
from benchlink._frames import need
from benchlink._models import Ref, ref, sensor_ref

if TYPE_CHECKING:
    from benchlink._client import Client

log = logging.getLogger("benchlink.client")

#: Handshake answers worth trying again (the server or its database is briefly away).
RETRY_HANDSHAKE = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Reading:
    """One reading as the stream sends it; ``id`` is its event id (the resume point);
    ``position`` is its batch's commit position (readings stored together share it, later
    batches have greater ones; None from a server older than the field)."""

    id: str
    sensor_id: str
    run_id: str
    capture_session_id: str
    timestamp: datetime
    raw_value: float
    value: float
    unit: str
    late: bool
    profile_version: str
    position: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Reading:
        stamp = _times.parse(d["timestamp"])
        assert stamp is not None
        return cls(
            d["id"],
            d["sensor_id"],
            d["run_id"],
            d["capture_session_id"],
            stamp,
            d["raw_value"],
            d["value"],
            d.get("unit") or "",
            bool(d.get("late")),
            d.get("profile_version") or "",
            d.get("position"),
        )


@dataclass(frozen=True)
class _Start:
    """The ``subscribed`` message: ``id`` is where the stream starts (None from a server
    older than that field)."""

    id: str | None


class _Dropped(Exception):
    """The connection ended (or the server cut us off): reconnect from the last reading."""


def follow(
    client: Client,
    *,
    sensor: Ref | None,
    run: Ref | None,
    session: Ref | None,
    last_event_id: str | None,
    idle_timeout: float | None,
) -> Iterator[Reading]:
    ws_sync = need("websockets.sync.client")
    unreachable = (OSError, need("websockets.exceptions").WebSocketException)
    query = {
        "sensor_id": None if sensor is None else sensor_ref(client, sensor),
        "run_id": None if run is None else ref(run),
        "capture_session_id": None if session is None else ref(session),
        "batch": "true",
    }
    base = client.config.url.replace("http", "ws", 1) + "/api/v1/telemetry/stream?"
    headers = dict(client.http.identity())
    if client.config.gateway_secret:
        headers["X-Gateway-Secret"] = client.config.gateway_secret
    last, failures, heard = last_event_id, 0, time.monotonic()
    while True:
        params = {k: v for k, v in query.items() if v is not None}
        if last is not None:
            params["last_event_id"] = last
        try:
            with ws_sync.connect(
                base + urlencode(params), additional_headers=headers, max_size=2**24
            ) as ws:
                for reading in _messages(ws, idle_timeout):
                    if isinstance(reading, _Start):
                        last = reading.id or last
                        continue
                    failures, heard, last = 0, time.monotonic(), reading.id
                    yield reading
                return  # idle for idle_timeout: the caller's iteration ends
        except _Dropped as why:
            log.info("live stream dropped (%s); resuming after %s", why, last)
        except unreachable as exc:  # refused, reset, timed out, or a handshake refused
            _raise_refusal(exc)
            log.info("live stream unreachable (%r); resuming after %s", exc, last)
        if idle_timeout is not None and time.monotonic() - heard > idle_timeout:
            return
        time.sleep(client.http.retry.delay(min(failures, 8), None))
        failures += 1


def _messages(ws: Any, idle_timeout: float | None) -> Iterator[Reading | _Start]:
    closed = need("websockets.exceptions").ConnectionClosed
    while True:
        try:
            text = ws.recv(timeout=idle_timeout)
        except TimeoutError:
            return
        except closed as exc:
            raise _Dropped(f"closed {exc.rcvd.code if exc.rcvd else ''}") from None
        message = json.loads(text)
        kind = message.get("type")
        if kind == "reading":
            yield Reading.from_json(message)
        elif kind == "readings":
            for item in message["items"]:
                yield Reading.from_json(item)
        elif kind == "subscribed":
            yield _Start(message.get("id"))
        elif kind == "reset":
            raise LiveReset(message.get("detail") or "the resume point is unknown")
        elif kind == "overflow":
            raise _Dropped(message.get("reason") or "overflow")


def _raise_refusal(exc: Exception) -> None:
    """A handshake the server refused for good (401, 404, 422) is the caller's error."""
    invalid_status = need("websockets.exceptions").InvalidStatus
    if not isinstance(exc, invalid_status):
        return
    response = exc.response
    if response.status_code in RETRY_HANDSHAKE:
        return
    try:
        body: Any = json.loads(response.body or b"")
    except ValueError:
        body = (response.body or b"").decode(errors="replace")
    raise error_for(response.status_code, body, response.reason_phrase) from None
