"""Who may watch which readings: identity from headers or a stream ticket, and a filter
whose ids all belong to the caller's project (anything else is 404, exactly as in REST)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from starlette.requests import HTTPConnection

from cloud.container import AppContainer, container
from cloud.db import models
from cloud.db.models import StreamTicketUse
from cloud.db.uow import read_only, transaction
from cloud.deps import identify, refuse_repeated_identity
from cloud.errors import FieldError, InvalidInput, Unauthenticated, invalid
from cloud.identity import Principal
from cloud.live import tickets
from cloud.live.events import StreamFilter
from cloud.services.scope import get_in_project

log = logging.getLogger("benchlink.live")

FILTER_KEYS = ("sensor_id", "run_id", "capture_session_id")


def ticket_secret(services: AppContainer) -> bytes:
    """The deployment's ticket secret; without one configured, a random per-process secret
    (fine for one process; several processes must share ``BENCHLINK_STREAM_TICKET_SECRET``,
    which ``benchlink-cloud serve`` sets for its own workers when it is not set)."""
    secret = services.stream_ticket_secret
    if secret is None:
        settings = services.settings
        if settings.stream_ticket_secret:
            secret = settings.stream_ticket_secret.encode()
        else:
            secret = secrets.token_bytes(32)
            log.warning(
                "BENCHLINK_STREAM_TICKET_SECRET is not set: stream tickets are valid only on "
                "the process that issued them"
            )
        services.stream_ticket_secret = secret
    return secret


async def principal(conn: HTTPConnection) -> Principal:
    refuse_repeated_identity(conn)
    ticket = conn.query_params.get("ticket")
    if ticket is not None:
        services = container(conn)
        said = tickets.claims(ticket_secret(services), ticket)
        await asyncio.to_thread(spend, services.sessionmaker, said)
        return said.principal
    # The same header rules as every REST route (gateway secret, 401 / 422).
    return identify(conn, container(conn).settings)


def spend(sessions: Any, said: tickets.Claims) -> None:
    """Record the ticket as used, in the database every API process shares; a ticket used
    before is refused. Spent tickets are forgotten once expired (none is older than that)."""
    now = datetime.now(UTC)
    with transaction(sessions) as db:
        db.execute(delete(StreamTicketUse).where(StreamTicketUse.expires_at < now))
        try:
            with db.begin_nested():
                db.add(
                    StreamTicketUse(
                        ticket_id=said.ticket_id,
                        expires_at=datetime.fromtimestamp(said.expires_at, UTC),
                    )
                )
        except IntegrityError:
            raise Unauthenticated(
                "stream ticket already used; request a new one for each connection"
            ) from None


def _uuid_param(conn: HTTPConnection, name: str) -> uuid.UUID | None:
    raw = conn.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise invalid(name, "must be a UUID") from None


async def stream_filter(conn: HTTPConnection, who: Principal) -> StreamFilter:
    ids = {key: _uuid_param(conn, key) for key in FILTER_KEYS}
    if all(v is None for v in ids.values()):
        raise InvalidInput(
            "give at least one of sensor_id, run_id, capture_session_id",
            errors=[FieldError("sensor_id", "one of sensor_id, run_id, capture_session_id")],
        )
    flt = StreamFilter(project_id=who.project_id, **ids)
    await asyncio.to_thread(_check_in_project, container(conn).sessionmaker, flt)
    return flt


def _check_in_project(sessions: Any, flt: StreamFilter) -> None:
    with read_only(sessions) as db:
        for model, ident in (
            (models.Sensor, flt.sensor_id),
            (models.Run, flt.run_id),
            (models.CaptureSession, flt.capture_session_id),
        ):
            if ident is not None:
                get_in_project(db, model, ident, flt.project_id)
