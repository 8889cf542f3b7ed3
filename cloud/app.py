"""The FastAPI application: wiring only; behaviour lives in routers and services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cloud import deps, fleet, health, logfilter, openapi, problems
from cloud.container import AppContainer, app_container, keep
from cloud.db import models
from cloud.db.engine import is_sqlite, make_engine, make_sessionmaker
from cloud.db.models import Base
from cloud.db.outage import RoundLog
from cloud.idempotency import IdempotencyStore
from cloud.live import setup as live
from cloud.middleware import (
    IdempotencyMiddleware,
    RequestBodyMiddleware,
    TelemetryAuthMiddleware,
    TimingMiddleware,
)
from cloud.observability import Stats
from cloud.routers import alarms as alarm_routes
from cloud.routers import annotations as annotation_routes
from cloud.routers import (
    calibrations,
    capture_sessions,
    clock,
    completeness,
    deleted,
    edges,
    events,
    experiments,
    jobs,
    me,
    metrics,
    ops,
    portal,
    projects,
    run_search,
    runs,
    sensor_faults,
    sensors,
    stream,
    telemetry,
    webhooks,
)
from cloud.services import alarm_clock, reprocess_runner, webhook_delivery
from cloud.services import purge as deleted_purge
from cloud.services.sensors import TokenGate
from cloud.settings import Settings

log = logging.getLogger("benchlink.cloud")
#: The periodic purges' failures (a process's tasks, whichever app runs them).
_IDEMPOTENCY_PURGE = RoundLog(log, "idempotency purge")
_DELETED_PURGE = RoundLog(log, "purge of deleted runs and experiments")

PURGE_EVERY_S = 600


#: Routers whose endpoints refuse a query parameter they do not take
#: (:func:`cloud.deps.known_query_parameters`). A request is matched against the routes in
#: this order, one by one: what edges and clients send all day (readings, metrics, heartbeats)
#: comes first, so it does not pay for every route of the portal before its own.
#: ``tests/cloud/test_routes.py`` holds that no route hides another.
CHECKED_ROUTERS = (
    telemetry,
    metrics,
    edges,
    projects,
    me,
    sensors,
    sensor_faults,
    calibrations,
    jobs,
    clock,
    experiments,
    run_search,
    runs,
    deleted,
    capture_sessions,
    completeness,
    annotation_routes,
    alarm_routes,
    webhooks,
    events,
)
#: The streams read their parameters by hand (a WebSocket has no dependant to check); a probe
#: or a scraper may add its own.
UNCHECKED_ROUTERS = (ops, stream, portal)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    engine, sessions, readers, owned = _engines(settings, engine)
    stats = Stats()
    stats.watch_edges(readers)
    logfilter.install()
    if settings.create_schema:
        Base.metadata.create_all(engine)

    # /docs and /redoc with Swagger UI and ReDoc served from the package, not a CDN.
    app = FastAPIOffline(
        title="benchlink cloud",
        version="0.1.0",
        description="Projects, experiments, runs, capture sessions, sensors, telemetry, "
        "metrics and the event journal of laboratory bench data. User requests carry the "
        "gateway's identity headers (X-User-Id, X-Project-Id, X-Project-Role, and "
        "X-Gateway-Secret where it is set: 'Authorize' fills them in); sensors send their "
        "token as a Bearer token. Errors are application/problem+json.",
        lifespan=_lifespan(owned),
        static_url=openapi.DOCS_STATIC_URL,
        swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": False},
    )
    openapi.install(app)
    services = AppContainer(
        settings=settings,
        engine=engine,
        sessionmaker=sessions,
        read_sessionmaker=readers,
        stats=stats,
        idempotency=IdempotencyStore(settings, sessions),
        sensor_gate=TokenGate(readers),
        clock_gate=TokenGate(readers, tables=(models.Edge, models.Sensor)),
    )
    keep(app, services)
    problems.install(app)
    for module in CHECKED_ROUTERS:
        app.include_router(module.router, dependencies=[Depends(deps.known_query_parameters)])
    for module in UNCHECKED_ROUTERS:
        app.include_router(module.router)
    _install_services(services)
    _install_middleware(app, services)
    return app


def _lifespan(
    owned: list[Engine],
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """The app's background tasks and start/stop hooks under one TaskGroup; the engines made
    for the app are closed once they have all ended."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = app_container(app)
        async with asyncio.TaskGroup() as tg:
            purge = tg.create_task(_purge_loop(app), name="periodic-purge")
            rules = tg.create_task(services.health.run(), name="fleet-health")
            for start in services.startup_hooks:
                await start()
            try:
                yield
            finally:
                for stop in reversed(services.shutdown_hooks):
                    await stop()
                purge.cancel()
                rules.cancel()
        # After the purge task has ended: pooled connections (sockets, SQLite files) are
        # closed now, not whenever the app object is collected.
        for owned_engine in owned:
            owned_engine.dispose()

    return lifespan


def _install_services(services: AppContainer) -> None:
    """The live stream, the fleet's heartbeats and health, alarms, webhooks, reprocessing."""
    live.install(services)
    sink = fleet.install(services)
    evaluator = health.Evaluator(
        services.sessionmaker,
        every_s=services.settings.health_every_s,
        pending=lambda: sink.pending,
    )
    sink.after_store.append(evaluator.after_store)
    services.health = evaluator
    alarm_clock.install(services)
    webhook_delivery.install(services)
    reprocess_runner.install(services)


def _engines(
    settings: Settings, engine: Engine | None
) -> tuple[Engine, sessionmaker[Session], sessionmaker[Session], list[Engine]]:
    """The engine (given, or made here), its sessions, the sessions for reads, and the
    engines made here (closed when the app stops)."""
    owned: list[Engine] = []
    if engine is None:
        engine = make_engine(settings.sqlalchemy_url)
        owned.append(engine)
    sessions = make_sessionmaker(engine)
    # Reads need no write lock on SQLite; on PostgreSQL one engine serves both.
    readers = sessions
    if is_sqlite(settings.sqlalchemy_url):
        read_engine = make_engine(settings.sqlalchemy_url, writer=False)
        owned.append(read_engine)
        readers = make_sessionmaker(read_engine)
    return engine, sessions, readers, owned


def _install_middleware(app: FastAPI, services: AppContainer) -> None:
    # Outermost last: timing sees everything, a telemetry sender is authenticated before its
    # body is read, bodies are read before idempotency hashes them.
    settings, stats = services.settings, services.stats
    app.add_middleware(
        IdempotencyMiddleware, settings=settings, store=services.idempotency, stats=stats
    )
    app.add_middleware(RequestBodyMiddleware, settings=settings)
    app.add_middleware(TelemetryAuthMiddleware, gate=services.sensor_gate)
    app.add_middleware(TimingMiddleware, stats=stats)


async def _purge_loop(app: FastAPI) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_S)
        await _purge_once(app)


async def _purge_once(app: FastAPI) -> None:
    """Expired idempotency keys, then deleted runs and experiments past their grace period;
    a failure is logged and tried again next time."""
    try:
        mw = _find_idempotency(app)
        if mw is not None:
            removed = await asyncio.to_thread(mw.purge_expired)
            if removed:
                log.info("purged %d expired idempotency keys", removed)
    except Exception as exc:
        _IDEMPOTENCY_PURGE.failed(exc, "tried again next time")
    else:
        _IDEMPOTENCY_PURGE.succeeded()
    try:
        services = app_container(app)
        grace = timedelta(seconds=services.settings.delete_grace_s)
        await asyncio.to_thread(deleted_purge.purge_expired, services.sessionmaker, grace)
    except Exception as exc:
        _DELETED_PURGE.failed(exc, "tried again next time")
    else:
        _DELETED_PURGE.succeeded()


def _find_idempotency(app: FastAPI) -> IdempotencyMiddleware | None:
    node: Any = app.middleware_stack
    while node is not None:
        if isinstance(node, IdempotencyMiddleware):
            return node
        node = getattr(node, "app", None)
    return None
