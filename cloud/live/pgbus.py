"""Fan-out across API processes on PostgreSQL: LISTEN/NOTIFY.

The process that stored a batch NOTIFYs channel ``benchlink_telemetry`` right after the
commit, from the committing worker thread and before the ingest request answers; every
process, itself included, dispatches what its LISTEN connection receives. So all processes
see batches in one order (that of the notifications), and a batch ingested after another
one was answered is never shown before it, whichever processes took the two requests.
The cost is one round trip to the database per ingest request, off the event loop.

A NOTIFY payload is limited to 8000 bytes, so a batch travels as consecutive chunks sent by
one statement (delivered together, in order); each chunk carries the batch header and the
index of its first reading, so every process derives the same event ids.

The LISTEN connection (psycopg async) reconnects with a jittered, capped backoff. While it is
down, a process dispatches its own batches directly and still notifies the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from cloud.live.hub import BatchHeader, Hub, Row

log = logging.getLogger("benchlink.live")

CHANNEL = "benchlink_telemetry"
#: PostgreSQL refuses payloads of 8000 bytes or more; stay clear of it.
MAX_PAYLOAD = 7500


def libpq_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


def chunks(header: BatchHeader, rows: Sequence[Row]) -> Iterator[str]:
    """JSON payloads below :data:`MAX_PAYLOAD` bytes, together carrying every row."""
    head = {
        "b": header.batch_id,
        "p": str(header.project_id),
        "s": str(header.sensor_id),
        "r": str(header.run_id),
        "c": str(header.capture_session_id),
        "u": header.unit,
        "v": header.profile_version,
    }
    base = len(json.dumps({**head, "i": 0, "rows": []}).encode()) + 16
    start, size, parts = 0, base, list[str]()
    for i, row in enumerate(rows):
        text = json.dumps(row, separators=(",", ":"))
        if parts and size + len(text) + 1 > MAX_PAYLOAD:
            yield _payload(head, start, parts)
            start, size, parts = i, base, list[str]()
        parts.append(text)
        size += len(text) + 1
    if parts:
        yield _payload(head, start, parts)


def _payload(head: dict[str, Any], start: int, rows: list[str]) -> str:
    prefix = json.dumps({**head, "i": start}, separators=(",", ":"))[:-1]
    return f'{prefix},"rows":[{",".join(rows)}]}}'


def parse(payload: str) -> tuple[BatchHeader, int, list[Row]]:
    d = json.loads(payload)
    header = BatchHeader(
        batch_id=int(d["b"]),
        project_id=uuid.UUID(d["p"]),
        sensor_id=uuid.UUID(d["s"]),
        run_id=uuid.UUID(d["r"]),
        capture_session_id=uuid.UUID(d["c"]),
        unit=d["u"],
        profile_version=d["v"],
    )
    rows: list[Row] = [(str(t), float(raw), float(v), bool(late)) for t, raw, v, late in d["rows"]]
    return header, int(d["i"]), rows


def _backoff(attempt: int) -> float:
    return float(min(10.0, 0.2 * 2.0**attempt) * random.uniform(0.5, 1.0))


NOTIFY_ALL = text(f"SELECT pg_notify('{CHANNEL}', p) FROM unnest(CAST(:payloads AS text[])) AS p")


class PostgresBus:
    def __init__(self, engine: Engine, *, connect_timeout: float = 5.0) -> None:
        self.engine = engine
        self.dsn = libpq_dsn(engine.url.render_as_string(False))
        self.state: Literal["idle", "running", "stopped"] = "idle"
        self.connect_timeout = connect_timeout
        self._hub: Hub | None = None
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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

    def publish(self, header: BatchHeader, rows: Sequence[Row]) -> bool:
        """NOTIFY every process (worker thread). True if this process will receive it too."""
        listening = self._listening.is_set()
        try:
            with self.engine.begin() as conn:
                conn.execute(NOTIFY_ALL, {"payloads": list(chunks(header, rows))})
        except Exception:  # the readings are stored; only their live delivery elsewhere fails
            log.exception("live NOTIFY of batch %s failed", header.batch_id)
            return False
        return listening

    async def _listen_loop(self) -> None:
        attempt = 0
        while self.state == "running":
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=int(self.connect_timeout)
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    attempt = 0
                    async for note in conn.notifies():
                        self._received(note.payload)
            except (psycopg.Error, OSError) as exc:
                self._listening.clear()
                log.warning("live LISTEN connection lost (%s); reconnecting", exc)
                await asyncio.sleep(_backoff(attempt))
                attempt += 1

    def _received(self, payload: str) -> None:
        try:
            header, start, rows = parse(payload)
        except (ValueError, KeyError, TypeError):
            log.exception("malformed live notification ignored")
            return
        if self._hub is not None:
            self._hub.dispatch(header, start, rows)
