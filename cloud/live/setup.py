"""Wiring of the live hub into the app: one hub per process, LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session

from cloud.live import pgbus
from cloud.live.hub import BatchHeader, Hub
from cloud.live.store import DatabaseStore
from cloud.services.telemetry import IngestedBatch
from cloud.settings import Settings


def install(app: FastAPI, settings: Settings) -> Hub:
    hub = Hub(
        store=DatabaseStore(app.state.read_sessionmaker),
        queue_size=settings.live_queue_size,
        resume_limit=settings.live_ring_size,
    )
    app.state.live_hub = hub
    app.state.ingest_listeners.append(hub.on_ingest)
    postgres = app.state.engine.dialect.name == "postgresql"
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

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)
    return hub
