"""Wiring of the live hub into the app: one hub per process, LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

from fastapi import FastAPI

from cloud.live.hub import Hub
from cloud.live.pgbus import PostgresBus
from cloud.settings import Settings


def install(app: FastAPI, settings: Settings) -> Hub:
    hub = Hub(ring_size=settings.live_ring_size, queue_size=settings.live_queue_size)
    app.state.live_hub = hub
    app.state.ingest_listeners.append(hub.on_ingest)

    async def start(app: FastAPI) -> None:
        engine = app.state.engine
        postgres = engine.dialect.name == "postgresql"
        await hub.start(PostgresBus(engine) if postgres else None)

    async def stop(app: FastAPI) -> None:
        await hub.stop()

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)
    return hub
