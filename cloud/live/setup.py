"""Wiring of the live hub into the app: one hub per process, LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

from sqlalchemy.orm import Session

from cloud.container import AppContainer
from cloud.db.engine import make_engine, make_sessionmaker
from cloud.db.uow import after_commit
from cloud.live import pgbus, positions
from cloud.live.events import BatchHeader
from cloud.live.hub import Hub
from cloud.live.store import DatabaseStore
from cloud.services.telemetry import IngestedBatch


def install(services: AppContainer) -> Hub:
    settings, engine = services.settings, services.engine
    postgres = engine.dialect.name == "postgresql"
    reads = services.read_sessionmaker
    if postgres:
        # A few connections of its own, without the pool's pre-ping: a batch read back is
        # then one round trip, not two, and the stream never waits for a request's slot.
        # A connection that broke fails one read; its watchers resume (Hub._cut_off).
        live_engine = make_engine(
            engine.url.render_as_string(False), pool_size=2, max_overflow=4, pool_pre_ping=False
        )
        reads = make_sessionmaker(live_engine)
    hub = Hub(
        store=DatabaseStore(reads),
        queue_size=settings.live_queue_size,
        resume_limit=settings.live_ring_size,
    )
    services.live_hub = hub

    def in_transaction(db: Session, batch: IngestedBatch) -> None:
        """The last statement of the ingest transaction: the batch's commit position (and on
        PostgreSQL its NOTIFY, in the same statement), then its announcement after the commit
        (where the bus does not announce it)."""
        if not batch.rows:
            return
        if postgres:
            header = pgbus.notify(db, BatchHeader.of(batch))
            hub.keep(batch)
        else:
            header = BatchHeader.of(batch, positions.record(db, batch.batch_id))
        after_commit(db, partial(hub.on_commit, header, batch))

    services.ingest_tx_listeners.append(in_transaction)

    uninstall: Callable[[], None] = lambda: None  # noqa: E731

    async def start() -> None:
        nonlocal uninstall
        await hub.start(pgbus.PostgresBus(engine) if postgres else None)
        uninstall = close_streams_on_signal(hub)

    async def stop() -> None:
        uninstall()
        await hub.stop()
        if postgres:
            live_engine.dispose()

    services.startup_hooks.append(start)
    services.shutdown_hooks.append(stop)
    return hub


#: How long a shutdown signal waits for the streams to end before the server gets it.
CLOSE_STREAMS_S = 2.0


def close_streams_on_signal(hub: Hub) -> Callable[[], None]:
    """End every live stream as soon as SIGTERM or SIGINT arrives; returns the undo.

    The server (uvicorn) waits for open responses to finish before it stops the app, and an
    event stream never finishes: without this, an open SSE client held ``systemctl stop``
    until it was killed. So the server's own handler is wrapped: the hub closes its streams
    first (WebSocket 1001, SSE response ended; clients resume by event id) and the signal
    goes on to the server once they have ended, or after :data:`CLOSE_STREAMS_S`. Handing
    it on afterwards, not at once, also lets the WebSocket close with 1001 before the
    server closes it on its own with 1012. A second signal goes through at once.

    Only in the main thread (signals are delivered there; a test client runs the app in
    another), and only over a Python handler (nothing to hand the signal on to otherwise).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Callable[[int, FrameType | None], Any], Any]] = {}

    async def close_then_forward(forward: Callable[[], Any]) -> None:
        hub.close_streams()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_STREAMS_S):
                await hub.unwatched.wait()
        forward()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(
            signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            if hub.closing:
                previous(signum, frame)
                return
            hub.closing = True  # a second signal is handed on at once
            forward = partial(previous, signum, frame)
            # A signal handler runs between two bytecodes of the loop thread: the hub is
            # touched from a callback, not from here.
            loop.call_soon_threadsafe(loop.create_task, close_then_forward(forward))

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def undo() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)

    return undo
