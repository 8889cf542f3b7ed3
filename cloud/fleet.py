"""Heartbeats written behind: taken at once, stored a second later, many in one statement.

A thousand edges send 33 heartbeats a second. Written one transaction each, a heartbeat cost
the API 2.4 ms of CPU (the pool's ping, BEGIN, UPDATE, COMMIT: psycopg's Python side of five
round trips), 8% of a core for the fleet. Here a heartbeat is authenticated from memory (the
edge's token hash -> its id, looked up once and remembered for ``ttl_s``), kept as its edge's
latest, and answered; a task stores what came in every ``flush_s`` in one transaction, one
executemany UPDATE whose WHERE checks the token again. So:

* a heartbeat is durable within ``flush_s`` of its answer (heartbeats are not durable data:
  the next one supersedes it; a crash loses at most a second of them);
* this process answers its edges' GETs with the heartbeats it holds (read your writes);
  other API processes see them once stored;
* a token rotated or revoked stops working at once in the process that rotated it, within
  ``ttl_s`` in others, and nothing sent with it after the rotation is stored (the UPDATE's
  WHERE no longer matches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cloud.container import AppContainer
from cloud.db.models import Edge
from cloud.db.types import JSONType, UTCDateTime
from cloud.db.uow import read_only, transaction

log = logging.getLogger("benchlink.cloud")


@dataclass(frozen=True)
class Pending:
    token_hash: str
    body: dict[str, Any]
    at: datetime


class HeartbeatSink:
    def __init__(
        self, sessions: sessionmaker[Session], *, flush_s: float = 1.0, ttl_s: float = 30.0
    ) -> None:
        self.sessions, self.flush_s, self.ttl_s = sessions, flush_s, ttl_s
        #: each edge's latest heartbeat not yet stored
        self.pending: dict[uuid.UUID, Pending] = {}
        #: token hash -> (edge id, until when it is trusted without asking: monotonic)
        self._known: dict[str, tuple[uuid.UUID, float]] = {}
        #: called with (session, {edge id: Pending}) in the flush's transaction, after the
        #: UPDATE (the health rules: cloud.health)
        self.after_store: list[Callable[[Session, dict[uuid.UUID, Pending]], None]] = []

    def remembered(self, token_hash: str) -> uuid.UUID | None:
        found = self._known.get(token_hash)
        return found[0] if found is not None and found[1] > time.monotonic() else None

    def lookup(self, token_hash: str) -> uuid.UUID | None:
        """The edge whose token this is (blocking: call from a worker thread)."""
        with read_only(self.sessions) as db:
            edge_id = db.scalar(select(Edge.id).where(Edge.token_hash == token_hash))
        if edge_id is not None:
            if len(self._known) >= 100_000:
                self._known.clear()
            self._known[token_hash] = (edge_id, time.monotonic() + self.ttl_s)
        return edge_id

    def forget(self, edge_id: uuid.UUID) -> None:
        """The edge's token changed: ask the database again next time."""
        # A copy first: heartbeats on the event loop add entries while this runs on a worker.
        for token_hash in [h for h, (e, _) in list(self._known.items()) if e == edge_id]:
            self._known.pop(token_hash, None)
        self.pending.pop(edge_id, None)

    def keep(self, edge_id: uuid.UUID, token_hash: str, body: dict[str, Any]) -> None:
        self.pending[edge_id] = Pending(token_hash, body, datetime.now(UTC))

    def flush(self) -> int:
        """Store what came in (blocking); return how many heartbeats were stored.

        Each API process flushes on its own timer, so an edge's heartbeats taken by two
        processes can reach the database out of order: one is stored only over an older one
        (by the time it was taken), else an earlier state -- fewer readings captured, a
        dead letter not yet reported -- would replace a later one."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        try:
            with transaction(self.sessions) as db:
                newer = _newer_than_stored(db, batch)
                if newer:
                    db.connection().execute(_STORE, [_row(e, p) for e, p in newer.items()])
                for hook in self.after_store:
                    hook(db, newer)
        except Exception:
            # Put them back unless a newer one came meanwhile: the next flush tries again.
            for edge_id, p in batch.items():
                self.pending.setdefault(edge_id, p)
            raise
        return len(newer)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:  # the database is away: keep the latest, try again
                log.warning("storing %d heartbeat(s) failed; retrying", len(self.pending))


#: one statement for every heartbeat of a flush (executemany); the WHERE holds the token (a
#: rotated one no longer matches) and the order (nothing older replaces what is stored)
_AT = bindparam("b_at", type_=UTCDateTime)
_STORE = (
    update(Edge)
    .where(
        Edge.id == bindparam("b_id"),
        Edge.token_hash == bindparam("b_token"),
        or_(Edge.heartbeat_at.is_(None), Edge.heartbeat_at < _AT),
    )
    .values(
        heartbeat=bindparam("b_body", type_=JSONType),
        heartbeat_at=_AT,
    )
)


def _row(edge_id: uuid.UUID, p: Pending) -> dict[str, Any]:
    return {"b_id": edge_id, "b_token": p.token_hash, "b_body": p.body, "b_at": p.at}


def _newer_than_stored(db: Session, batch: dict[uuid.UUID, Pending]) -> dict[uuid.UUID, Pending]:
    """The heartbeats of ``batch`` that will be stored: their edge's token still matches and
    nothing newer is stored. The rows are locked (PostgreSQL; SQLite writes one at a time),
    in id order so that two processes flushing the same edges cannot deadlock, and the
    health rules (``after_store``) see exactly what was stored."""
    stored = {
        edge_id: (token_hash, at)
        for edge_id, token_hash, at in db.execute(
            select(Edge.id, Edge.token_hash, Edge.heartbeat_at)
            .where(Edge.id.in_(list(batch)))
            .order_by(Edge.id)
            .with_for_update()
        )
    }
    newer: dict[uuid.UUID, Pending] = {}
    for edge_id, p in batch.items():
        token_hash, at = stored.get(edge_id, (None, None))
        if token_hash == p.token_hash and (at is None or at < p.at):
            newer[edge_id] = p
    return newer


def newest(
    body: dict[str, Any] | None, at: datetime | None, pending: Pending | None
) -> tuple[dict[str, Any] | None, datetime | None]:
    """The newer of an edge's stored heartbeat and the one this process holds unstored
    (``pending``): another API process may have stored a newer one since this one came."""
    if pending is not None and (at is None or pending.at >= at):
        return pending.body, pending.at
    return body, at


def install(services: AppContainer) -> HeartbeatSink:
    sink = HeartbeatSink(services.sessionmaker)
    services.heartbeats = sink
    task: asyncio.Task[None] | None = None

    async def start() -> None:
        nonlocal task
        task = asyncio.get_running_loop().create_task(sink.run(), name="heartbeat-flush")

    async def stop() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(sink.flush)

    services.startup_hooks.append(start)
    services.shutdown_hooks.append(stop)
    return sink
