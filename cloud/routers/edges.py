from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from starlette.concurrency import run_in_threadpool

from cloud.container import container
from cloud.db import models
from cloud.deps import DbSession, Owner, Viewer, same_project
from cloud.edge_schemas import EdgeIn, EdgeOut, EdgeWithToken, ServerTime, now_us
from cloud.errors import Forbidden, invalid
from cloud.fleet import Pending
from cloud.routers.sensors import secret_response
from cloud.schemas import Page
from cloud.services import edges
from cloud.services.scope import get_in_project
from cloud.services.tokens import bearer_token, hash_token
from common.heartbeat import Heartbeat

router = APIRouter(prefix="/api/v1/edges", tags=["edges"])

Limit = Annotated[int, Query(ge=1, le=500)]


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(secret_response)])
def register_edge(body: EdgeIn, db: DbSession, caller: Owner) -> EdgeWithToken:
    """Register a bench PC. The token (for its ``[edge] token``) is in this response only;
    the server keeps its hash."""
    same_project(caller, body.project_id)
    edge, token = edges.register(db, caller, body)
    return EdgeWithToken(edge=edges.to_out(edge), token=token)


@router.get("")
def list_edges(
    request: Request,
    db: DbSession,
    caller: Viewer,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    state: Literal["never", "online", "stale"] | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[EdgeOut]:
    """The project's edges, newest first, each with its last heartbeat and its state
    (``stale``: silent for more than three of its heartbeat periods). ``state`` filters the
    page after it is read (a page may then hold fewer than ``limit``)."""
    rows, nxt = edges.list_edges(db, caller, name=name, limit=limit, cursor=cursor)
    pending = _pending(request)
    items = [edges.to_out(e, pending.get(e.id)) for e in rows]
    return Page(items=[e for e in items if state is None or e.state == state], next_cursor=nxt)


@router.get("/{edge_id}")
def get_edge(edge_id: uuid.UUID, request: Request, db: DbSession, caller: Viewer) -> EdgeOut:
    edge = get_in_project(db, models.Edge, edge_id, caller.project_id)
    return edges.to_out(edge, _pending(request).get(edge_id))


def _pending(request: Request) -> dict[uuid.UUID, Pending]:
    """The heartbeats this process took and has not stored yet (read your writes)."""
    sink = container(request).heartbeats
    return dict(sink.pending)


@router.post("/{edge_id}/rotate-token", dependencies=[Depends(secret_response)])
def rotate_token(
    edge_id: uuid.UUID, request: Request, db: DbSession, caller: Owner
) -> EdgeWithToken:
    """Issue a new token; the old one stops working at once."""
    edge, token = edges.rotate(db, caller, edge_id)
    container(request).heartbeats.forget(edge_id)
    return EdgeWithToken(edge=edges.to_out(edge), token=token)


@router.post("/{edge_id}/revoke-token")
def revoke_token(edge_id: uuid.UUID, request: Request, db: DbSession, caller: Owner) -> EdgeOut:
    edge = edges.revoke(db, caller, edge_id)
    container(request).heartbeats.forget(edge_id)
    return edges.to_out(edge)


@router.put("/{edge_id}/heartbeat")
async def heartbeat(edge_id: uuid.UUID, body: Heartbeat, request: Request) -> ServerTime:
    """The edge's state, sent by the edge daemon with its own token (Bearer). Each heartbeat
    replaces the one before (PUT: sending it twice is the same as once); it is stored within
    a second (:mod:`cloud.fleet`). The answer is the server's time, as ``GET /api/v1/time``
    gives it: the edge takes it as a clock sample."""
    received = now_us()
    if body.edge_id is not None and body.edge_id != edge_id:
        raise invalid("edge_id", "differs from the edge id in the path")
    token = bearer_token(request.headers.get("authorization"))
    if not token:
        raise edges.token_refused(None)
    sink = container(request).heartbeats
    token_hash = hash_token(token)
    owner = sink.remembered(token_hash) or await run_in_threadpool(sink.lookup, token_hash)
    if owner is None:
        raise edges.token_refused(token)
    if owner != edge_id:
        raise Forbidden(f"this token is another edge's, not edge {edge_id}'s")
    sink.keep(edge_id, token_hash, body.model_dump(mode="json"))
    return ServerTime(time_us=now_us(), received_us=received)
