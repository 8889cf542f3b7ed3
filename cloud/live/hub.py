"""The process-wide live hub: committed readings in, per-client bounded queues out.

* :meth:`Hub.on_ingest` is an ``app.state.ingest_listeners`` entry. It runs in the worker
  thread that committed the batch, so it only packs the rows and hands them to the event loop
  with ``call_soon_threadsafe`` (or, on PostgreSQL, to the bus that brings them back to every
  process): ingest never waits for a subscriber.
* Every subscriber owns a bounded queue. A client that cannot keep up is not waited for: its
  queue overflows, it is marked :class:`SlowConsumer` and disconnected with a notice; it can
  reconnect with the last event id it saw and resume from the ring buffer without a gap.
* The ring buffer keeps the newest events (``live_ring_size``) for that resume. Event ids are
  ``"<batch_id>-<index in batch>"``, the same in every process, so a client may resume on
  another process behind the same address.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cloud.services.telemetry import IngestedBatch

log = logging.getLogger("benchlink.live")

#: One reading on the wire between processes: [timestamp, raw_value, value, late].
Row = tuple[str, float, float, bool]


@dataclass(frozen=True)
class BatchHeader:
    """What is common to every reading of a stored batch."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    unit: str
    profile_version: str


def pack(batch: IngestedBatch) -> tuple[BatchHeader, list[Row]]:
    rows = batch.rows
    header = BatchHeader(
        batch_id=int(rows[0]["batch_id"]) if rows else 0,
        project_id=batch.project_id,
        sensor_id=batch.sensor_id,
        run_id=batch.run_id,
        capture_session_id=batch.capture_session_id,
        unit=batch.display_unit,
        profile_version=batch.profile_version,
    )
    return header, [
        (r["ts"].isoformat(), float(r["raw_value"]), float(r["value"]), bool(r["late"]))
        for r in rows
    ]


class LiveEvent:
    """One reading as clients see it; encoded to JSON once, however many clients get it."""

    __slots__ = ("_json", "header", "id", "row", "seq")

    def __init__(self, header: BatchHeader, index: int, row: Row) -> None:
        self.header = header
        self.row = row
        self.id = f"{header.batch_id}-{index}"
        self.seq = 0
        self._json: str | None = None

    def message(self) -> dict[str, Any]:
        h, (ts, raw, value, late) = self.header, self.row
        return {
            "type": "reading",
            "id": self.id,
            "batch_id": h.batch_id,
            "sensor_id": str(h.sensor_id),
            "run_id": str(h.run_id),
            "capture_session_id": str(h.capture_session_id),
            "timestamp": ts,
            "raw_value": raw,
            "value": value,
            "unit": h.unit,
            "late": late,
            "profile_version": h.profile_version,
        }

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = json.dumps(self.message(), separators=(",", ":"))
        return self._json


@dataclass(frozen=True)
class StreamFilter:
    """Which readings a client gets: all given ids must match, within one project."""

    project_id: uuid.UUID
    sensor_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    capture_session_id: uuid.UUID | None = None

    def matches(self, h: BatchHeader) -> bool:
        return (
            h.project_id == self.project_id
            and (self.sensor_id is None or h.sensor_id == self.sensor_id)
            and (self.run_id is None or h.run_id == self.run_id)
            and (self.capture_session_id is None or h.capture_session_id == self.capture_session_id)
        )


class SlowConsumer(Exception):
    """The client's queue overflowed; it is disconnected and may resume by event id."""

    def __init__(self, dropped: int) -> None:
        super().__init__(f"client too slow: {dropped} events not delivered")
        self.dropped = dropped


@dataclass(eq=False)
class Subscriber:
    """One client's bounded queue. The bound counts events, but a batch arriving at an
    empty queue is always taken whole, so one large ingest batch never trips a healthy
    client; a client with ``maxsize`` events still undelivered is too slow."""

    filter: StreamFilter
    maxsize: int
    #: Events to deliver before the live queue (a resume from the ring buffer).
    backlog: list[LiveEvent] = field(default_factory=list)
    #: The resume point was no longer in the ring buffer: the client must reload history.
    resume_lost: bool = False
    dropped: int = 0
    pending: int = 0
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)
    _batches: deque[list[LiveEvent]] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, events: list[LiveEvent]) -> None:
        if self.overflowed.is_set():
            self.dropped += len(events)
        elif self.pending and self.pending + len(events) > self.maxsize:
            self.dropped += len(events)
            self.overflowed.set()
        else:
            self._batches.append(events)
            self.pending += len(events)
            self._wakeup.set()

    async def take(self) -> list[LiveEvent]:
        """Everything queued, oldest first; waits while nothing is."""
        while not self._batches:
            self._wakeup.clear()
            await self._wakeup.wait()
        events = [ev for batch in self._batches for ev in batch]
        self._batches.clear()
        self.pending = 0
        return events


class Bus(Protocol):
    """Carries batches to the hubs of every API process."""

    async def start(self, hub: Hub) -> None: ...
    async def stop(self) -> None: ...
    def publish(self, header: BatchHeader, rows: Sequence[Row]) -> bool:
        """Send (worker thread); True if the bus also delivers it to this process."""
        ...


class Hub:
    def __init__(self, *, ring_size: int = 20_000, queue_size: int = 10_000) -> None:
        self.state: Literal["idle", "running", "stopped"] = "idle"
        self.queue_size = queue_size
        self.bus: Bus | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ring: deque[LiveEvent] = deque(maxlen=ring_size)
        self._index: dict[str, int] = {}
        self._seq = itertools.count(1)
        self._by_project: dict[uuid.UUID, set[Subscriber]] = {}
        self.published = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, bus: Bus | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.bus = bus
        self.state = "running"
        if bus is not None:
            await bus.start(self)

    async def stop(self) -> None:
        self.state = "stopped"
        if self.bus is not None:
            await self.bus.stop()
        for subs in self._by_project.values():
            for sub in subs:
                sub.overflowed.set()

    # --- in: committed batches --------------------------------------------------------------

    def on_ingest(self, batch: IngestedBatch) -> None:
        """Ingest listener; called in the committing worker thread (or the loop thread)."""
        loop = self._loop
        if self.state != "running" or loop is None or not batch.rows:
            return
        header, rows = pack(batch)
        if self.bus is not None and self.bus.publish(header, rows):
            return
        loop.call_soon_threadsafe(self.dispatch, header, 0, rows)

    def dispatch(self, header: BatchHeader, start: int, rows: Sequence[Row]) -> None:
        """Record events in the ring buffer and offer them to matching subscribers (loop
        thread only). Never blocks: a full subscriber queue marks that subscriber slow."""
        events = [LiveEvent(header, start + i, row) for i, row in enumerate(rows)]
        for ev in events:
            self._remember(ev)
        self.published += len(events)
        subs = [s for s in self._by_project.get(header.project_id, ()) if s.filter.matches(header)]
        for sub in subs:
            sub.offer(events)

    def _remember(self, ev: LiveEvent) -> None:
        ring = self._ring
        if ring.maxlen is not None and len(ring) == ring.maxlen:
            self._index.pop(ring[0].id, None)
        ev.seq = next(self._seq)
        ring.append(ev)
        self._index[ev.id] = ev.seq

    # --- out: subscribers -----------------------------------------------------------------

    def subscribe(self, flt: StreamFilter, last_event_id: str | None = None) -> Subscriber:
        """Register a client (loop thread). With ``last_event_id``, the events after it that
        match are delivered first; registration and the replay happen in one step, so
        nothing published in between is lost or doubled."""
        sub = Subscriber(flt, self.queue_size)
        if last_event_id:
            seq = self._index.get(last_event_id)
            if seq is None:
                sub.resume_lost = True
            else:
                skip = seq - self._ring[0].seq + 1
                sub.backlog = [
                    ev for ev in itertools.islice(self._ring, skip, None) if flt.matches(ev.header)
                ]
        self._by_project.setdefault(flt.project_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._by_project.get(sub.filter.project_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_project[sub.filter.project_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_project.values())


SendEvents = Callable[[Sequence[LiveEvent]], Awaitable[None]]

#: Events handed to one send call at most (a resume backlog goes out in slices).
SEND_SLICE = 500


async def pump(
    sub: Subscriber,
    send: SendEvents,
    *,
    keepalive: Callable[[], Awaitable[None]] | None = None,
    keepalive_s: float = 15.0,
) -> None:
    """Deliver a subscriber's events until cancelled; raises :class:`SlowConsumer` as soon as
    its queue overflows, even while a send to a stalled client is still pending."""
    backlog, sub.backlog = sub.backlog, []
    await _send_all(sub, send, backlog)
    while True:
        if sub.overflowed.is_set():
            raise SlowConsumer(sub.dropped)
        try:
            async with asyncio.timeout(keepalive_s if keepalive else None):
                events = await sub.take()
        except TimeoutError:
            assert keepalive is not None
            await keepalive()
            continue
        await _send_all(sub, send, events)


async def _send_all(sub: Subscriber, send: SendEvents, events: Sequence[LiveEvent]) -> None:
    for i in range(0, len(events), SEND_SLICE):
        await _send_or_overflow(sub, send, events[i : i + SEND_SLICE])


async def _send_or_overflow(sub: Subscriber, send: SendEvents, events: Sequence[LiveEvent]) -> None:
    sending = asyncio.ensure_future(send(events))
    overflow = asyncio.ensure_future(sub.overflowed.wait())
    try:
        await asyncio.wait({sending, overflow}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        overflow.cancel()
        if not sending.done():
            sending.cancel()
    if sending.cancelled() or sub.overflowed.is_set():
        raise SlowConsumer(sub.dropped)
    sending.result()
