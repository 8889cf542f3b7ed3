"""The application's services in one typed object, kept on the app under one key.

:func:`cloud.app.create_app` builds an :class:`AppContainer` once and each ``install`` of a
service fills in its part; routes, dependencies and middleware fetch it with
:func:`container` (a request or a WebSocket) or :func:`app_container` (the app itself, for
the lifespan and tests). This module is the only one that touches ``app.state``: everything
else sees named, typed fields instead of an untyped bag of keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, orm
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from cloud.settings import Settings

if TYPE_CHECKING:  # the services import this module to install themselves
    from starlette.applications import Starlette

    from cloud.fleet import HeartbeatSink
    from cloud.health import Evaluator
    from cloud.idempotency import IdempotencyStore
    from cloud.live.hub import Hub
    from cloud.observability import Stats
    from cloud.services.reprocess_runner import Runner
    from cloud.services.telemetry import IngestedBatch
    from cloud.services.tokens import TokenGate
    from cloud.services.webhook_delivery import Deliverer

#: The one ``app.state`` key.
_KEY = "benchlink"

Hook = Callable[[], Awaitable[None]]
AlarmMessages = list[dict[str, Any]]


@dataclass
class AppContainer:
    """What one app (one API process) holds. The fields without a default are made by
    ``create_app``; the ones marked "installed" by the service's ``install`` right after."""

    settings: Settings
    engine: Engine
    #: Read-write sessions; on SQLite the writer's connection.
    sessionmaker: orm.sessionmaker[Session]
    #: Sessions for reads (on SQLite a second engine without the write lock; else the same).
    read_sessionmaker: orm.sessionmaker[Session]
    stats: Stats
    idempotency: IdempotencyStore
    #: Whether a Bearer token is a sensor's, asked before a telemetry body is read.
    sensor_gate: TokenGate
    #: The same for an edge's or a sensor's token (GET /api/v1/time).
    clock_gate: TokenGate
    #: Called with each stored telemetry batch after its commit (the live stream subscribes).
    ingest_listeners: list[Callable[[IngestedBatch], None]] = field(default_factory=list)
    #: Called with (session, batch) inside the ingest transaction, before its commit.
    ingest_tx_listeners: list[Callable[[Session, IngestedBatch], None]] = field(
        default_factory=list
    )
    #: Called with each transaction's alarm transitions after its commit (any thread).
    alarm_listeners: list[Callable[[AlarmMessages], None]] = field(default_factory=list)
    #: Run in order when the app starts, in reverse order when it stops.
    startup_hooks: list[Hook] = field(default_factory=list)
    shutdown_hooks: list[Hook] = field(default_factory=list)
    #: How often the stale alarm rules are evaluated: a stale alarm is raised at most this
    #: late (tests make it shorter or longer).
    stale_every_s: float = 1.0
    #: The stream tickets' secret, made on first use when none is configured.
    stream_ticket_secret: bytes | None = None
    # Installed (cloud.live.setup, cloud.fleet, cloud.health, cloud.services.*).
    live_hub: Hub = field(init=False)
    heartbeats: HeartbeatSink = field(init=False)
    health: Evaluator = field(init=False)
    announce_alarms: Callable[[Session, AlarmMessages], None] = field(init=False)
    webhook_deliverer: Deliverer = field(init=False)
    reprocess_runner: Runner = field(init=False)


def keep(app: Starlette, services: AppContainer) -> None:
    """Put the container on the app (once, in ``create_app``)."""
    setattr(app.state, _KEY, services)


def app_container(app: Starlette) -> AppContainer:
    """The app's container (the lifespan, background tasks and tests)."""
    services: AppContainer = getattr(app.state, _KEY)
    return services


def container(conn: HTTPConnection) -> AppContainer:
    """The container of the app serving this request or WebSocket."""
    return app_container(conn.app)
