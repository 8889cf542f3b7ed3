"""Fan-out across API processes on PostgreSQL: LISTEN/NOTIFY.

The process that stored a batch dispatches it to its own clients at once and NOTIFYs the
others on channel ``benchlink_telemetry``. A NOTIFY payload is limited to 8000 bytes, so a
batch travels as consecutive chunks sent in one transaction (delivered together, in commit
order); each chunk carries the batch header and the index of its first reading, so every
process derives the same event ids. A process ignores its own notifications by origin id.

Each process holds two dedicated connections (psycopg async): one LISTENs, one NOTIFYs. Both
reconnect with a jittered, capped backoff; while the sender is down, announcements beyond
its bounded queue are dropped and logged (the readings themselves are safely stored).
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
from sqlalchemy.engine import make_url

from cloud.live.hub import BatchHeader, Hub, Row

log = logging.getLogger("benchlink.live")

CHANNEL = "benchlink_telemetry"
#: PostgreSQL refuses payloads of 8000 bytes or more; stay clear of it.
MAX_PAYLOAD = 7500
SEND_QUEUE = 10_000


def libpq_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


def chunks(origin: str, header: BatchHeader, rows: Sequence[Row]) -> Iterator[str]:
    """JSON payloads below :data:`MAX_PAYLOAD` bytes, together carrying every row."""
    head = {
        "o": origin,
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


def parse(payload: str) -> tuple[str, BatchHeader, int, list[Row]]:
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
    return d["o"], header, int(d["i"]), rows


def _backoff(attempt: int) -> float:
    return float(min(10.0, 0.2 * 2.0**attempt) * random.uniform(0.5, 1.0))


class PostgresBus:
    def __init__(self, sqlalchemy_url: str, *, connect_timeout: float = 5.0) -> None:
        self.dsn = libpq_dsn(sqlalchemy_url)
        self.origin = uuid.uuid4().hex
        self.state: Literal["idle", "running", "stopped"] = "idle"
        self.connect_timeout = connect_timeout
        self._hub: Hub | None = None
        self._outbox: asyncio.Queue[tuple[BatchHeader, Sequence[Row]]] = asyncio.Queue(SEND_QUEUE)
        self._listening = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        self.state = "running"
        self._tasks = [
            asyncio.create_task(self._listen_loop(), name="live-pg-listen"),
            asyncio.create_task(self._send_loop(), name="live-pg-notify"),
        ]
        # Serve only once other processes' batches can reach us; a database that is down now
        # is not fatal (the loops keep retrying), the stream simply starts later.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.connect_timeout):
                await self._listening.wait()

    async def stop(self) -> None:
        self.state = "stopped"
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def announce(self, header: BatchHeader, rows: Sequence[Row]) -> None:
        try:
            self._outbox.put_nowait((header, rows))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("live fan-out queue full; batch %s not announced", header.batch_id)

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
            origin, header, start, rows = parse(payload)
        except (ValueError, KeyError, TypeError):
            log.exception("malformed live notification ignored")
            return
        if origin != self.origin and self._hub is not None:
            self._hub.dispatch(header, start, rows)

    async def _send_loop(self) -> None:
        attempt = 0
        pending: tuple[BatchHeader, Sequence[Row]] | None = None
        while self.state == "running":
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn, connect_timeout=int(self.connect_timeout)
                ) as conn:
                    attempt = 0
                    while True:
                        pending = pending or await self._outbox.get()
                        async with conn.transaction():
                            for payload in chunks(self.origin, *pending):
                                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                        pending = None
            except (psycopg.Error, OSError) as exc:
                log.warning("live NOTIFY connection lost (%s); reconnecting", exc)
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
