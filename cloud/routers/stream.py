"""Live telemetry: WebSocket and Server-Sent Events, and the tickets browsers use for them.

Messages (JSON, one reading each; SSE puts the id in ``id:`` and the type in ``event:``)::

    {"type": "subscribed", "id": "p<position>" | "<event id>", "filter": {...},
     "resumed_from": "<event id>" | null, "batch": false}
    {"type": "reading", "id": "<batch_id>-<index>", "batch_id": 1, "sensor_id": "...",
     "run_id": "...", "capture_session_id": "...", "timestamp": "...", "raw_value": 1.0,
     "value": 1.0, "unit": "°C", "late": false, "profile_version": "v1", "position": 7}
    {"type": "readings", "items": [<reading>, ...]}   with ?batch=true, instead of the above
    {"type": "reset", "detail": "..."}      resume point unknown or too old: reload history
    {"type": "overflow", "dropped": n, "reason": "...", "detail": "..."}
                                            the client is disconnected; resume by event id

``reason`` says why a client is cut off: ``too_slow`` (it fell behind; ``dropped`` readings
were not sent), ``resync`` (this server may have missed readings while its notification
connection was down) or ``read_failed`` (a batch could not be read back); the last two are
no fault of the client. The WebSocket is then closed with code 4008 either way.

When the server shuts down, streams end at once: the WebSocket is closed with 1001 (going
away), the SSE response ends; either client resumes by event id on reconnecting.

With ``?batch=true`` the readings that are ready together (up to 1000) travel as one
``readings`` message whose items are the ``reading`` messages above, in order; SSE gives it
the id of its last item. At high rates that is far fewer frames for the server and the
client to handle (the portal uses it).

A client resumes with SSE ``Last-Event-ID`` (or ``?last_event_id=`` on either endpoint): the
readings after that id are read from the database (up to ``live_ring_size`` of them), then
the stream follows live, without a gap or a reading twice.

A reading's ``position`` is the commit position of its batch (what ``p<position>`` counts).
A client that drew several sensors' histories read with ``GET /telemetry/series?live=true``
opens one stream at the earliest ``live_from`` and drops each sensor's readings whose position
is at or before that sensor's own ``live_from``: each reading is then drawn exactly once.

``subscribed`` carries an ``id`` too (SSE in its ``id:`` line): where the stream starts. A
resumed stream starts at its resume point; any other at the commit position of the moment,
``p<position>``, and delivers what commits after it. A client keeps it as its resume point
until the first reading replaces it, so that a connection that drops before any reading has
arrived resumes with the readings stored meanwhile (an EventSource does this by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from cloud.container import container
from cloud.db.outage import DATABASE_DOWN
from cloud.deps import Viewer
from cloud.errors import DomainError
from cloud.live import access, tickets
from cloud.live.events import LiveEvent
from cloud.live.hub import Hub
from cloud.live.subscriber import SlowConsumer, Subscriber, pump
from cloud.problems import database_unavailable, problem_for, server_stopping

router = APIRouter(prefix="/api/v1", tags=["live telemetry"])

#: WebSocket close code for a client cut off (application range 4000-4999): the name is its
#: first reason, a client that could not keep up; the overflow notice says which it was.
CLOSE_TOO_SLOW = 4008
#: WebSocket close code when the server shuts down (RFC 6455 "going away").
CLOSE_GOING_AWAY = 1001
RESET_DETAIL = "the resume point is unknown or too old; reload history, then follow live"


class StreamTicketOut(BaseModel):
    ticket: str
    expires_at: float
    expires_in: int


@router.post("/stream-tickets", status_code=201)
def issue_stream_ticket(request: Request, caller: Viewer) -> StreamTicketOut:
    """A ticket for ``?ticket=`` on the stream endpoints, valid for a minute and for one
    stream (ask for a new one on every reconnection), carrying the caller's project, user and
    role (browsers cannot set headers on WebSocket/EventSource)."""
    ticket = tickets.issue(access.ticket_secret(container(request)), caller)
    return StreamTicketOut(
        ticket=ticket.text, expires_at=ticket.expires_at, expires_in=tickets.TICKET_TTL_S
    )


def _hub(conn: Request | WebSocket) -> Hub:
    hub = container(conn).live_hub
    return hub


def _hello(sub: Subscriber, resumed_from: str | None, batch: bool) -> dict[str, Any]:
    flt = sub.filter
    return {
        "type": "subscribed",
        "id": sub.start,
        "filter": {k: str(v) if v else None for k, v in vars(flt).items()},
        "resumed_from": resumed_from,
        "batch": batch,
    }


def _wants_batches(conn: Request | WebSocket) -> bool:
    return conn.query_params.get("batch", "").lower() in ("1", "true", "yes")


def readings_message(events: Sequence[LiveEvent]) -> str:
    """One ``readings`` message; each reading's JSON was encoded once for every client."""
    return '{"type":"readings","items":[' + ",".join(ev.json for ev in events) + "]}"


def grouped(events: Sequence[LiveEvent]) -> list[Sequence[LiveEvent]]:
    """Runs of readings, and each alarm notice alone (it is its own message)."""
    out: list[Sequence[LiveEvent]] = []
    start = 0
    for i, ev in enumerate(events):
        if not ev.is_reading:
            if i > start:
                out.append(events[start:i])
            out.append([ev])
            start = i + 1
    if start < len(events):
        out.append(events[start:] if start else events)
    return out


_OVERFLOW_DETAIL = {
    "too_slow": "client too slow",
    "resync": "the server may have missed readings while it was not notified of them",
    "read_failed": "the server could not read a batch back",
    "shutdown": "the server is shutting down",
}


def _overflow(exc: SlowConsumer) -> dict[str, Any]:
    """The notice to a client that is cut off. ``reason`` was added after ``dropped`` and
    ``detail``, which keep their meaning (a client reading only those still works)."""
    return {
        "type": "overflow",
        "dropped": exc.dropped,
        "reason": exc.reason,
        "detail": f"{_OVERFLOW_DETAIL[exc.reason]}; reconnect with the last event id to resume",
    }


async def _first_done(*aws: Awaitable[None]) -> None:
    """Run until the first finishes (raising its error, if any); cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()


@router.websocket("/telemetry/stream")
async def stream_websocket(ws: WebSocket) -> None:
    try:
        who = await access.principal(ws)
        flt = await access.stream_filter(ws, who)
    except DomainError as exc:
        # Refuse the handshake with the same problem+json (401/404/422) as REST would.
        await ws.send_denial_response(problem_for(exc))
        return
    except DATABASE_DOWN:
        await ws.send_denial_response(problem_for(database_unavailable()))
        return
    hub = _hub(ws)
    if hub.closing:  # the server is stopping: not a stream cut off as soon as it opens
        await ws.send_denial_response(problem_for(server_stopping()))
        return
    await ws.accept()
    last = ws.query_params.get("last_event_id")
    batch = _wants_batches(ws)
    sub = await hub.subscribe(flt, last)
    try:
        await ws.send_json(_hello(sub, last, batch))
        if sub.resume_lost:
            await ws.send_json({"type": "reset", "detail": RESET_DETAIL})
        await _first_done(pump(sub, _ws_sender(ws, batch)), _until_closed(ws))
    except SlowConsumer as exc:
        await _cut_off(ws, exc)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await ws.close()


def _ws_sender(ws: WebSocket, batch: bool) -> Callable[[Sequence[LiveEvent]], Awaitable[None]]:
    """What the pump calls with the events ready: a frame each, or a frame per group."""

    async def send(events: Sequence[LiveEvent]) -> None:
        if batch:
            for group in grouped(events):
                await ws.send_text(
                    readings_message(group) if group[0].is_reading else group[0].json
                )
            return
        for ev in events:
            await ws.send_text(ev.json)

    return send


async def _until_closed(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


async def _cut_off(ws: WebSocket, exc: SlowConsumer) -> None:
    """Close a stream the hub dropped: going away (shutdown), or overflow then 4008."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            if exc.reason == "shutdown":
                await ws.close(CLOSE_GOING_AWAY, "server shutting down")
            else:
                await ws.send_json(_overflow(exc))
                await ws.close(CLOSE_TOO_SLOW, _OVERFLOW_DETAIL[exc.reason])


@router.get(
    "/telemetry/stream/sse",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_sse(request: Request) -> Response:
    """The same events as the WebSocket, as ``text/event-stream``; resumes after
    ``Last-Event-ID`` (header, or ``last_event_id`` query parameter): a reading's id, or the
    ``id`` of the ``subscribed`` event (``p<position>``, where a stream starts before any
    reading has arrived)."""
    try:
        who = await access.principal(request)
        flt = await access.stream_filter(request, who)
    except DomainError as exc:
        return problem_for(exc)
    hub = _hub(request)
    if hub.closing:
        return problem_for(server_stopping())
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    sub = await hub.subscribe(flt, last or None)
    batch = _wants_batches(request)
    return EventStream(hub, sub, _hello(sub, last or None, batch), batch=batch)


def sse(data: str, *, event: str | None = None, ident: str | None = None) -> str:
    head = (f"id: {ident}\n" if ident else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n"


class EventStream(Response):
    """A ``text/event-stream`` response fed by a hub subscriber. Unlike a StreamingResponse
    it notices when its client stalls (the pending write is abandoned on overflow)."""

    media_type = "text/event-stream"

    def __init__(
        self, hub: Hub, sub: Subscriber, hello: dict[str, Any], *, batch: bool = False
    ) -> None:
        super().__init__(
            media_type=self.media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        # An endless body has no length.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.hub, self.sub, self.hello, self.batch = hub, sub, hello, batch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            write = _body_writer(send)
            # Its id is where the stream starts: EventSource resumes from it by itself.
            hello = sse(json.dumps(self.hello), event="subscribed", ident=self.hello["id"])
            await write("retry: 2000\n\n" + hello)
            if self.sub.resume_lost:
                await write(
                    sse(json.dumps({"type": "reset", "detail": RESET_DETAIL}), event="reset")
                )

            async def events(evs: Sequence[LiveEvent]) -> None:
                if self.batch:
                    await write(
                        "".join(
                            sse(readings_message(g), event="readings", ident=g[-1].id)
                            if g[0].is_reading
                            else sse(g[0].json, event=g[0].event)
                            for g in grouped(evs)
                        )
                    )
                else:
                    await write("".join(sse(ev.json, event=ev.event, ident=ev.id) for ev in evs))

            async def keepalive() -> None:
                await write(f": keepalive {time.time():.0f}\n\n")

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass

            await _first_done(pump(self.sub, events, keepalive=keepalive), until_disconnect())
        except SlowConsumer as exc:
            if exc.reason != "shutdown":  # on shutdown the stream just ends
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await write(sse(json.dumps(_overflow(exc)), event="overflow"))
        finally:
            self.hub.unsubscribe(self.sub)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def _body_writer(send: Send) -> Callable[[str], Awaitable[None]]:
    async def write(text: str) -> None:
        await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    return write
