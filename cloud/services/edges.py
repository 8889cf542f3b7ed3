"""Edges: bench PCs registered in a project, with a token each, reporting heartbeats
(taken and stored by :mod:`cloud.fleet`).

Registration, rotation and revocation follow sensors' (:mod:`cloud.services.tokens`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.db.models import Edge
from cloud.edge_schemas import EdgeIn, EdgeOut, EdgeState
from cloud.errors import Conflict, Unauthenticated
from cloud.fleet import Pending, newest
from cloud.identity import Principal
from cloud.pagination import newest_first
from cloud.schemas import normalize_name
from cloud.services import journal, tokens
from cloud.services.scope import get_in_project, require_project

TOKEN_PREFIX = "ble_"
#: an edge silent for more than this many of its heartbeat periods is stale
STALE_AFTER_BEATS = 3


def health(
    at: datetime | None, heartbeat: dict[str, Any] | None, now: datetime
) -> tuple[EdgeState, float | None]:
    """(state, seconds since the last heartbeat was received), by the cloud's clock."""
    if at is None or heartbeat is None:
        return "never", None
    silent = max(0.0, (now - at).total_seconds())
    period = float(heartbeat.get("heartbeat_s") or 30.0)
    return ("stale" if silent > STALE_AFTER_BEATS * period else "online"), silent


def to_out(edge: models.Edge, pending: Pending | None = None) -> EdgeOut:
    """``pending``: a heartbeat taken by this process and not yet stored."""
    fields = {c: getattr(edge, c) for c in EdgeOut.model_fields if hasattr(edge, c)}
    fields["heartbeat"], fields["heartbeat_at"] = newest(edge.heartbeat, edge.heartbeat_at, pending)
    state, silent = health(fields["heartbeat_at"], fields["heartbeat"], datetime.now(UTC))
    conditions = sorted((edge.health or {}).values(), key=lambda c: (c["since"], c["rule"]))
    return EdgeOut.model_validate(
        {**fields, "state": state, "silent_s": silent, "health": conditions}
    )


def register(db: Session, caller: Principal, body: EdgeIn) -> tuple[models.Edge, str]:
    require_project(db, caller.project_id)
    _unique_name(db, caller.project_id, body.name)
    edge = models.Edge(project_id=caller.project_id, name=body.name, created_by=caller.user_id)
    token = tokens.issue(edge, TOKEN_PREFIX)
    db.add(edge)
    db.flush()
    journal.record(
        db,
        "edge.registered",
        project_id=caller.project_id,
        actor=caller.actor,
        edge_id=str(edge.id),
        name=edge.name,
    )
    return edge, token


def _unique_name(db: Session, project_id: uuid.UUID, name: str) -> None:
    if (
        db.scalar(select(Edge.id).where(Edge.project_id == project_id, Edge.name == name))
        is not None
    ):
        raise Conflict(f"an edge named {name!r} already exists in this project")


def list_edges(
    db: Session, caller: Principal, *, name: str | None, limit: int, cursor: str | None
) -> tuple[Sequence[models.Edge], str | None]:
    q = select(Edge).where(Edge.project_id == caller.project_id)
    if name is not None:
        q = q.where(Edge.name == normalize_name(name))
    return newest_first(db, q, Edge, limit, cursor)


def rotate(db: Session, caller: Principal, edge_id: uuid.UUID) -> tuple[models.Edge, str]:
    edge = get_in_project(db, models.Edge, edge_id, caller.project_id)
    token = tokens.issue(edge, TOKEN_PREFIX)
    _record(db, caller, "edge.token_rotated", edge, token_preview=edge.token_preview)
    return edge, token


def revoke(db: Session, caller: Principal, edge_id: uuid.UUID) -> models.Edge:
    edge = get_in_project(db, models.Edge, edge_id, caller.project_id)
    tokens.revoke(edge)
    _record(db, caller, "edge.token_revoked", edge)
    return edge


def _record(db: Session, caller: Principal, kind: str, edge: models.Edge, **payload: Any) -> None:
    journal.record(
        db, kind, project_id=caller.project_id, actor=caller.actor, edge_id=str(edge.id), **payload
    )


def token_refused(token: str | None) -> Unauthenticated:
    if not token:
        return Unauthenticated(
            "a heartbeat needs the edge's token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Unauthenticated(
        "unknown, rotated or revoked edge token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def counts_by_state(db: Session, now: datetime) -> dict[EdgeState, int]:
    """How many edges are in each state (the cloud's Prometheus gauge), all projects."""
    rows = db.execute(select(Edge.heartbeat_at, Edge.heartbeat["heartbeat_s"].as_float()))
    counts: dict[EdgeState, int] = {"never": 0, "online": 0, "stale": 0}
    for at, period in rows:
        if at is None:
            counts["never"] += 1
            continue
        silent = (now - at).total_seconds()
        counts["stale" if silent > STALE_AFTER_BEATS * (period or 30.0) else "online"] += 1
    return counts
