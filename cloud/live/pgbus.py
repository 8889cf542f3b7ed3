"""Fan-out across API processes on PostgreSQL: LISTEN/NOTIFY of batch headers.

The ingest transaction itself NOTIFYs channel ``benchlink_telemetry`` with the batch's
header (:func:`notify`, an ``AppContainer.ingest_tx_listeners`` entry): PostgreSQL delivers it
at the commit and only if the commit happens, so a stored batch is never left unannounced
and no extra connection or transaction is spent. Every process, the ingesting one included,
announces what its LISTEN connection receives, so all processes see batches in one order
(that of the commits) and a batch ingested after another one was answered is never shown
before it, whichever processes took the two requests.

The same statement gives the batch its commit position (:mod:`cloud.live.positions`), which
the header carries as ``q``. The payload is the header alone (a few hundred bytes whatever
the batch size); a process
that has a subscriber for the batch reads its rows (:mod:`cloud.live.store`) or takes them
from the ingest it served itself.

The LISTEN connection (psycopg async) reconnects with a jittered, capped backoff. While it is
down, a process announces its own batches directly (after their commit), but the batches
other processes commit meanwhile never reach it: once it listens again, its subscribers are
disconnected with the overflow notice (reason ``resync``) and resume after their last event
id from the database (:meth:`Hub.resync`), rather than follow on with a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cloud.db.uow import listen_connection
from cloud.live import positions
from cloud.live.events import BatchHeader
from cloud.live.hub import Hub

log = logging.getLogger("benchlink.live")

CHANNEL = "benchlink_telemetry"
#: Alarm transitions (:mod:`cloud.services.alarm_clock`), NOTIFYed by their transaction.
ALARM_CHANNEL = "benchlink_alarms"


def libpq_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


def encode(h: BatchHeader) -> str:
    """The header as JSON; its ``q`` (position) last, so that :func:`head` can leave it to
    the database to fill in."""
    return json.dumps(
        {
            "b": h.batch_id,
            "p": str(h.project_id),
            "s": str(h.sensor_id),
            "r": str(h.run_id),
            "c": str(h.capture_session_id),
            "u": h.unit,
            "v": h.profile_version,
            "n": h.count,
            "f": h.first_ts.isoformat(),
            "l": h.last_ts.isoformat(),
            "q": h.position,
        },
        separators=(",", ":"),
    )


def head(h: BatchHeader) -> str:
    """The payload of ``h`` up to its position: the database appends ``<position>}``."""
    text = encode(replace(h, position=None))
    assert text.endswith(',"q":null}')
    return text[: -len("null}")]


def parse(payload: str) -> BatchHeader:
    d = json.loads(payload)
    return BatchHeader(
        batch_id=int(d["b"]),
        project_id=uuid.UUID(d["p"]),
        sensor_id=uuid.UUID(d["s"]),
        run_id=uuid.UUID(d["r"]),
        capture_session_id=uuid.UUID(d["c"]),
        unit=str(d["u"]),
        profile_version=str(d["v"]),
        count=int(d["n"]),
        first_ts=datetime.fromisoformat(d["f"]),
        last_ts=datetime.fromisoformat(d["l"]),
        position=None if d.get("q") is None else int(d["q"]),
    )


def notify(db: Session, header: BatchHeader) -> BatchHeader:
    """Give the batch its commit position and queue the header's notification, in the ingest
    transaction (sent at its commit); returns the header with its position."""
    position = positions.record_and_notify(db, header.batch_id, CHANNEL, head(header))
    return replace(header, position=position)


def _backoff(attempt: int) -> float:
    return float(min(10.0, 0.2 * 2.0**attempt) * random.uniform(0.5, 1.0))


class PostgresBus:
    def __init__(self, engine: Engine, *, connect_timeout: float = 5.0) -> None:
        self.dsn = libpq_dsn(engine.url.render_as_string(False))
        self.state: Literal["idle", "running", "stopped"] = "idle"
        self.connect_timeout = connect_timeout
        self._hub: Hub | None = None
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self.state = "running"
        self._task = asyncio.create_task(self._listen_loop(), name="live-pg-listen")
        # Serve only once batches can reach us; a database that is down now is not fatal
        # (the loop keeps retrying), the stream then starts later.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout):
                await self._listening.wait()

    async def stop(self) -> None:
        self.state = "stopped"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen_loop(self) -> None:
        attempt = 0
        while self.state == "running":
            try:
                async with listen_connection(self.dsn, self.connect_timeout) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {ALARM_CHANNEL}")
                    self._listening.set()
                    if attempt:
                        log.warning("live LISTEN connection back")
                    attempt = 0
                    # Whatever was committed while nobody here listened was never announced
                    # here: those subscribers resume from the database.
                    if self._hub is not None:
                        self._hub.resync()
                    async for note in conn.notifies():
                        if note.channel == ALARM_CHANNEL:
                            self._alarm(note.payload)
                        else:
                            self._received(note.payload)
            except asyncio.CancelledError:
                self._listening.clear()
                raise
            except Exception as exc:  # any end of listening is an outage
                # Not only connection errors: a loop that died while still marked as
                # listening would leave this process deaf for good, and silently so.
                self._listening.clear()
                # One line per outage, not per attempt (the retries back off to seconds).
                (log.warning if attempt == 0 else log.debug)(
                    "live LISTEN connection lost (%r); reconnecting", exc
                )
                await asyncio.sleep(_backoff(attempt))
                attempt += 1

    def _alarm(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.exception("malformed alarm notification ignored")
            return
        if self._hub is not None and isinstance(message, dict):
            self._hub.notify_alarm(message)

    def _received(self, payload: str) -> None:
        try:
            header = parse(payload)
        except (ValueError, KeyError, TypeError):
            log.exception("malformed live notification ignored")
            return
        if self._hub is not None:
            self._hub.announce(header)
