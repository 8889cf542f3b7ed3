"""Wiring of the live hub into the app: one hub per process, LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cloud.db.engine import make_engine, make_sessionmaker
from cloud.live import pgbus
from cloud.live.hub import BatchHeader, Hub
from cloud.live.store import DatabaseStore
from cloud.services.telemetry import IngestedBatch
from cloud.settings import Settings


def install(app: FastAPI, settings: Settings) -> Hub:
    engine: Engine = app.state.engine
    postgres = engine.dialect.name == "postgresql"
    reads = app.state.read_sessionmaker
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
    app.state.live_hub = hub
    app.state.ingest_listeners.append(hub.on_ingest)
    if postgres:

        def in_transaction(db: Session, batch: IngestedBatch) -> None:
            if batch.rows:
                pgbus.notify(db, BatchHeader.of(batch))
                hub.keep(batch)

        app.state.ingest_tx_listeners.append(in_transaction)

    async def start(app: FastAPI) -> None:
        await hub.start(pgbus.PostgresBus(app.state.engine) if postgres else None)

    async def stop(app: FastAPI) -> None:
        await hub.stop()
        if postgres:
            live_engine.dispose()

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)
    return hub
