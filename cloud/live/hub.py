"""The process-wide live hub: batch headers in, per-client bounded queues out.

* A stored batch is announced by its :class:`BatchHeader` alone (ids, unit, count, first and
  last timestamp). On SQLite the ingest's after-commit listener announces it in this process;
  on PostgreSQL the ingest transaction NOTIFYs the header (:mod:`cloud.live.pgbus`) and every
  process announces what its LISTEN connection receives.
* Rows are only wanted where someone watches: a process with no subscriber whose filter
  matches a header does nothing more with it. Otherwise it takes the rows the ingest left in
  this process (:meth:`Hub.keep`) or reads that batch back from the database, once however
  many subscribers match. Announced batches are dispatched strictly in announcement order
  (a read in flight holds back the batches behind it).
* Every subscriber owns a bounded queue. A client that cannot keep up is not waited for: its
  queue overflows, it is marked :class:`SlowConsumer` and disconnected with a notice; it can
  reconnect with the last event id it saw and resume without a gap. The hub cuts clients off
  the same way, with another ``reason``, when it cannot vouch for what they would get next
  (a resync after a LISTEN outage, a failed read-back) and when the server shuts down.
* Resume reads the readings after that id from the database. Event ids are
  ``"<batch_id>-<index in batch>"``, the same in every process. "After" means committed
  after: batches are dispatched in commit order, and each has a commit ``position``
  (:mod:`cloud.live.positions`; batch ids are drawn at insert time and say nothing of it).
  Which batches follow the id is taken from a ring of the newest headers (in dispatch order,
  a few hundred bytes per batch), else from the batch table in position order (a process
  that started after the id was given, forgot it, or has not dispatched it yet); a resume
  point older than ``resume_limit`` readings is answered with ``reset``.
* A subscription starts at a commit position, ``"p<position>"`` (:func:`position_id`): the
  highest this process has dispatched (else the database's newest). The stream delivers
  what commits after it, and a client resumes from it as from a reading's id, so that a
  connection dropped before its first reading misses nothing stored meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, Protocol

import msgspec

from cloud.services.telemetry import IngestedBatch
from cloud.store.telemetry.base import LiveRow, StoredBatch
from cloud.utctime import isoformat_many
from common.reading import ENCODER

log = logging.getLogger("benchlink.live")

#: One reading as delivered: (timestamp ISO 8601 UTC, raw_value, value, late).
Row = LiveRow


@dataclass(frozen=True)
class BatchHeader:
    """What is common to every reading of a stored batch, and where to find its rows."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    unit: str
    profile_version: str
    count: int
    first_ts: datetime
    last_ts: datetime
    #: Commit position (:mod:`cloud.live.positions`); None where it is not known.
    position: int | None = None

    @cached_property
    def ids(self) -> tuple[str, str, str]:
        """The sensor, run and session ids as text, made once per batch."""
        return str(self.sensor_id), str(self.run_id), str(self.capture_session_id)

    @classmethod
    def of(cls, batch: IngestedBatch, position: int | None = None) -> BatchHeader:
        return cls(
            batch_id=batch.batch_id,
            project_id=batch.project_id,
            sensor_id=batch.sensor_id,
            run_id=batch.run_id,
            capture_session_id=batch.capture_session_id,
            unit=batch.display_unit,
            profile_version=batch.profile_version,
            count=len(batch.rows),
            first_ts=batch.first_ts,
            last_ts=batch.last_ts,
            position=position,
        )


def live_rows(batch: StoredBatch) -> list[Row]:
    """The delivered form of a stored batch (the same as :mod:`cloud.live.store` reads back),
    the timestamps from their microseconds (a fifth of ``isoformat``'s cost)."""
    late = batch.late
    return [
        (ts, float(raw), float(value), late)
        for ts, raw, value in zip(
            isoformat_many(batch.stamps_us), batch.raw_values, batch.values, strict=True
        )
    ]


class Message(msgspec.Struct, gc=False):
    """One reading as a client gets it (``type`` first, as clients read it)."""

    type: str
    id: str
    batch_id: int
    sensor_id: str
    run_id: str
    capture_session_id: str
    timestamp: str
    raw_value: float
    value: float
    unit: str
    late: bool
    profile_version: str


class LiveEvent:
    """One reading as clients see it; encoded to JSON once, however many clients get it."""

    __slots__ = ("_json", "header", "index", "row")
    #: The SSE event name.
    event = "reading"

    def __init__(self, header: BatchHeader, index: int, row: Row) -> None:
        self.header = header
        self.index = index
        self.row = row
        self._json: str | None = None

    @property
    def id(self) -> str:
        """``<batch_id>-<index in batch>``: the same in every process."""
        return f"{self.header.batch_id}-{self.index}"

    def message(self) -> Message:
        h, (ts, raw, value, late) = self.header, self.row
        sensor, run, session = h.ids
        return Message(
            "reading", self.id, h.batch_id, sensor, run, session, ts, raw, value, h.unit, late,
            h.profile_version,
        )  # fmt: skip

    @property
    def is_reading(self) -> bool:
        return True

    @property
    def json(self) -> str:
        """``message()`` as compact JSON, encoded once however many clients get it."""
        if self._json is None:
            self._json = ENCODER.encode(self.message()).decode()
        return self._json


class AlarmNotice(LiveEvent):
    """An alarm transition (:func:`cloud.services.alarms.live_message`): delivered between
    readings to the subscribers whose filter matches its sensor, run and session. It has no
    event id: a client resumes after the last reading it saw, and an alarm missed while it was
    away is in ``GET /alarms``."""

    __slots__ = ()
    event = "alarm"

    def __init__(self, message: dict[str, Any]) -> None:
        raised = datetime.fromisoformat(message["raised_at"])
        scope = BatchHeader(
            batch_id=-1,
            project_id=uuid.UUID(message["project_id"]),
            sensor_id=uuid.UUID(message["sensor_id"]),
            run_id=uuid.UUID(message["run_id"]) if message.get("run_id") else uuid.UUID(int=0),
            capture_session_id=uuid.UUID(message["capture_session_id"])
            if message.get("capture_session_id")
            else uuid.UUID(int=0),
            unit="",
            profile_version="",
            count=0,
            first_ts=raised,
            last_ts=raised,
        )
        super().__init__(scope, 0, ("", 0.0, 0.0, False))
        self._json = json.dumps(message, separators=(",", ":"))

    @property
    def id(self) -> str:
        return ""

    @property
    def is_reading(self) -> bool:
        return False


def events(header: BatchHeader, rows: Sequence[Row], start: int = 0) -> list[LiveEvent]:
    """Events of ``rows[start:]`` of one batch."""
    return [LiveEvent(header, i, rows[i]) for i in range(start, len(rows))]


def parse_event_id(event_id: str) -> tuple[int, int] | None:
    batch, sep, index = event_id.partition("-")
    try:
        return (int(batch), int(index)) if sep else None
    except ValueError:
        return None


def position_id(position: int) -> str:
    """The event id of a commit position: a resume point before any reading (``p<n>``)."""
    return f"p{position}"


def parse_position(event_id: str) -> int | None:
    """The commit position of a :func:`position_id`, else None."""
    digits = event_id[1:]
    ok = event_id[:1] == "p" and digits.isascii() and digits.isdigit()
    return int(digits) if ok else None


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


#: Why a client is cut off. ``too_slow``: its queue overflowed; ``resync``: this process may
#: have missed batches (its LISTEN connection was down); ``read_failed``: a batch it watches
#: could not be read back; ``shutdown``: the server is stopping. All but the last are told
#: with the overflow notice; in every case the client resumes by event id.
CutOffReason = Literal["too_slow", "resync", "read_failed", "shutdown"]


class SlowConsumer(Exception):
    """The client is cut off (see ``reason``); it is disconnected and may resume by event id.
    The name is the first reason's; the others came later and end the stream the same way."""

    def __init__(self, dropped: int, reason: CutOffReason = "too_slow") -> None:
        super().__init__(f"client cut off ({reason}): {dropped} events not delivered")
        self.dropped = dropped
        self.reason: CutOffReason = reason


@dataclass(eq=False)
class Subscriber:
    """One client's bounded queue. The bound counts events, but a batch arriving at an
    empty queue is always taken whole, so one large ingest batch never trips a healthy
    client; a client with ``maxsize`` events still undelivered is too slow."""

    filter: StreamFilter
    maxsize: int
    #: Events to deliver before the live queue (a resume read from the database).
    backlog: list[LiveEvent] = field(default_factory=list)
    #: The resume point is too old or unknown: the client must reload history.
    resume_lost: bool = False
    dropped: int = 0
    pending: int = 0
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Why the client was cut off (the first reason given).
    reason: CutOffReason = "too_slow"
    #: Batches the resume backlog delivers; their live announcement is not delivered again.
    skip: frozenset[int] = frozenset()
    #: The resume point's commit position: live batches at or before it were seen already.
    floor: int | None = None
    #: The event id the stream goes on after: the resume point, else the commit position at
    #: subscription (:func:`position_id`); None where none is known (a hub without a store).
    start: str | None = None
    _batches: deque[list[LiveEvent]] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def _wanted(self, header: BatchHeader) -> bool:
        return header.batch_id not in self.skip and (
            self.floor is None or header.position is None or header.position > self.floor
        )

    def offer(self, batch: list[LiveEvent]) -> None:
        if not self._wanted(batch[0].header):
            return
        if self.overflowed.is_set():
            self.dropped += len(batch)
        elif self.pending and self.pending + len(batch) > self.maxsize:
            self.cut_off(len(batch))
        else:
            self._batches.append(batch)
            self.pending += len(batch)
            self._wakeup.set()

    def notice(self, ev: LiveEvent) -> None:
        """An alarm transition: queued like a batch of one, whatever came before it."""
        if self.overflowed.is_set():
            self.dropped += 1
        elif self.pending and self.pending + 1 > self.maxsize:
            self.cut_off(1)
        else:
            self._batches.append([ev])
            self.pending += 1
            self._wakeup.set()

    def resume_after(self, after: Sequence[BatchHeader], floor: int | None) -> None:
        """The backlog will deliver ``after`` (what committed after the commit position
        ``floor``): nothing of it, nor anything committed at or before ``floor``, may come
        live as well, whether it is offered later or was queued while the resume point was
        looked up."""
        self.skip = frozenset(h.batch_id for h in after)
        self.floor = floor
        kept = [b for b in self._batches if self._wanted(b[0].header)]
        self._batches = deque(kept)
        self.pending = sum(len(b) for b in kept)

    def cut_off(self, dropped: int = 0, reason: CutOffReason = "too_slow") -> None:
        """Disconnect the client (it resumes by event id). Wakes a pump waiting for events:
        setting ``overflowed`` alone left an idle client connected and deaf for good."""
        self.dropped += dropped
        if not self.overflowed.is_set():
            self.reason = reason
        self.overflowed.set()
        self._wakeup.set()

    def cut_off_error(self) -> SlowConsumer:
        return SlowConsumer(self.dropped, self.reason)

    async def take(self) -> list[LiveEvent]:
        """Everything queued, oldest first; waits while nothing is. Raises
        :class:`SlowConsumer` once the client is cut off."""
        while not self._batches:
            if self.overflowed.is_set():
                raise self.cut_off_error()
            self._wakeup.clear()
            await self._wakeup.wait()
        taken = [ev for batch in self._batches for ev in batch]
        self._batches.clear()
        self.pending = 0
        return taken


class Store(Protocol):
    """Reads readings back from the database (blocking; called in a worker thread)."""

    def rows(self, headers: Sequence[BatchHeader]) -> dict[int, list[Row]]: ...
    def headers_after(
        self, flt: StreamFilter, batch_id: int, limit: int
    ) -> list[BatchHeader] | None:
        """Batch ``batch_id`` and the batches ``flt`` matches that committed after it, in
        commit order, until they hold more than ``limit`` readings; None if ``batch_id`` is
        unknown or not matched."""
        ...

    def headers_since(
        self, flt: StreamFilter, position: int, limit: int
    ) -> list[BatchHeader] | None:
        """The batches ``flt`` matches that committed after commit position ``position``, in
        commit order, until they hold more than ``limit`` readings; None if no batch has
        committed at ``position`` yet (not a position of this database)."""
        ...

    def position(self) -> int:
        """The newest commit position (0 before the first batch)."""
        ...


class Bus(Protocol):
    """Carries batch headers to the hubs of every API process."""

    @property
    def listening(self) -> bool: ...
    async def start(self, hub: Hub) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class _Announced:
    header: BatchHeader
    local: StoredBatch | None
    reading: asyncio.Future[dict[int, list[Row]]] | None = None
    #: An alarm transition, delivered in its turn (after the batch that raised it).
    notice: AlarmNotice | None = None


class Hub:
    def __init__(
        self,
        *,
        store: Store | None = None,
        ring_size: int = 10_000,
        queue_size: int = 10_000,
        resume_limit: int = 20_000,
        keep_rows: int = 50_000,
    ) -> None:
        self.state: Literal["idle", "running", "stopped"] = "idle"
        #: The server is shutting down: every stream ends, new ones end at once.
        self.closing = False
        self.store = store
        self.queue_size = queue_size
        self.resume_limit = resume_limit
        self.bus: Bus | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Newest headers in announcement order, by batch id (dict order is that order).
        self._ring: OrderedDict[int, BatchHeader] = OrderedDict()
        #: The highest commit position dispatched (or read from the database): where a new
        #: subscription starts. None until known, and again after a resync.
        self._position: int | None = None
        self._ring_size = ring_size
        self._by_project: dict[uuid.UUID, set[Subscriber]] = {}
        #: Set while nobody is subscribed (a shutdown waits for the streams to end).
        self.unwatched = asyncio.Event()
        self.unwatched.set()
        self._incoming: deque[_Announced] = deque()
        self._draining: asyncio.Task[None] | None = None
        #: Rows of batches ingested here, until their announcement (bounded by row count).
        self._kept: OrderedDict[int, StoredBatch] = OrderedDict()
        self._kept_rows, self._keep_max = 0, keep_rows
        self._kept_lock = threading.Lock()
        #: Readings delivered to at least one subscriber; batches whose rows were read back.
        self.published = 0
        self.batches_read = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, bus: Bus | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.bus = bus
        self.state = "running"
        if bus is not None:
            await bus.start(self)

    def close_streams(self) -> None:
        """The server is shutting down (loop thread): end every stream now, and every stream
        opened from now on at once. A server waits for its open responses before it stops
        the app, and an event stream never ends by itself."""
        self.closing = True
        for sub in self._subscribers():
            sub.cut_off(reason="shutdown")

    async def stop(self) -> None:
        self.state = "stopped"
        if self.bus is not None:
            await self.bus.stop()
        if self._draining is not None:
            self._draining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._draining
        self.close_streams()

    def _subscribers(self) -> list[Subscriber]:
        return [sub for subs in self._by_project.values() for sub in subs]

    # --- in: stored batches ---------------------------------------------------------------

    def watched(self, project_id: uuid.UUID) -> bool:
        """Whether anyone in this process watches the project (any thread; a hint only)."""
        return bool(self._by_project.get(project_id))

    def keep(self, batch: IngestedBatch) -> None:
        """Hold a batch's rows (ingest worker thread, before the commit) for its announcement,
        so that this process need not read them back. Only while someone here watches."""
        if not batch.rows or not self.watched(batch.project_id):
            return
        with self._kept_lock:
            self._kept[batch.batch_id] = batch.rows
            self._kept_rows += len(batch.rows)
            while self._kept_rows > self._keep_max and len(self._kept) > 1:
                _, rows = self._kept.popitem(last=False)
                self._kept_rows -= len(rows)

    def _take_kept(self, batch_id: int) -> StoredBatch | None:
        with self._kept_lock:
            rows = self._kept.pop(batch_id, None)
            if rows is not None:
                self._kept_rows -= len(rows)
            return rows

    def on_commit(self, header: BatchHeader, batch: IngestedBatch) -> None:
        """After an ingest commit (worker thread). Announces the batch in this process unless
        the bus does (PostgreSQL with its LISTEN connection up)."""
        loop = self._loop
        if self.state != "running" or loop is None or not batch.rows:
            return
        if self.bus is not None and self.bus.listening:
            return
        local = batch.rows if self.watched(batch.project_id) else None
        loop.call_soon_threadsafe(self.announce, header, local)

    def announce(self, header: BatchHeader, local: StoredBatch | None = None) -> None:
        """A stored batch (loop thread). Delivered after every batch announced before it."""
        if header.batch_id in self._ring or self.state == "stopped":
            return  # announced twice (the bus came back while we announced it ourselves)
        if local is None:
            local = self._take_kept(header.batch_id)
        item = _Announced(header, local)
        if local is None and self._wanted(header):
            item.reading = self._read([header])  # start now; earlier batches may still wait
        self._incoming.append(item)
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(
                self._drain(), name="live-dispatch"
            )

    def _wanted(self, header: BatchHeader) -> bool:
        return any(s.filter.matches(header) for s in self._by_project.get(header.project_id, ()))

    def _read(self, headers: Sequence[BatchHeader]) -> asyncio.Future[dict[int, list[Row]]]:
        store = self.store
        assert store is not None, "rows of another process's batch need a store"
        self.batches_read += len(headers)
        return asyncio.ensure_future(asyncio.to_thread(store.rows, headers))

    async def _drain(self) -> None:
        while self._incoming:
            item = self._incoming[0]
            if item.notice is not None:
                self._incoming.popleft()
                self._deliver(item.notice)
                continue
            try:
                rows = await self._rows_of(item)
            except Exception:  # the batch is stored; only its live delivery failed
                log.exception("live: rows of batch %s unavailable", item.header.batch_id)
                rows = None
                self._cut_off(item.header)
            self._incoming.popleft()
            self.dispatch(item.header, rows)

    async def _rows_of(self, item: _Announced) -> Sequence[Row] | None:
        """The batch's rows if someone here watches it, else None. Raises rather than return
        fewer rows than the batch holds: a watcher must never be handed a silent gap."""
        header = item.header
        if item.local is not None:
            rows = live_rows(item.local) if self._wanted(header) else None
        elif item.reading is not None or self._wanted(header):
            reading = item.reading or self._read([header])
            rows = (await reading).get(header.batch_id, [])
        else:
            return None
        if rows is not None and len(rows) != header.count:
            raise LookupError(
                f"{len(rows)} of the {header.count} readings of batch {header.batch_id}"
            )
        return rows

    def _cut_off(self, header: BatchHeader) -> None:
        """Disconnect the batch's watchers rather than leave a gap: they resume after the
        last reading they got, from the database."""
        for sub in self._by_project.get(header.project_id, ()):
            if sub.filter.matches(header):
                sub.cut_off(header.count, reason="read_failed")

    def resync(self) -> None:
        """Batches may have been stored without reaching this process (the bus was down or
        came up late): disconnect every subscriber, and forget the ring, so that each one
        resumes after its last reading from the batch table, which has them all (loop
        thread)."""
        self._ring.clear()
        self._position = None  # batches beyond it may have been missed: ask the database
        subs = self._subscribers()
        if subs:
            log.warning("live: %d subscribers cut off to resume from the database", len(subs))
        for sub in subs:
            sub.cut_off(reason="resync")

    def dispatch(self, header: BatchHeader, rows: Sequence[Row] | None) -> None:
        """Remember the header and offer the batch to matching subscribers (loop thread).
        Never blocks: a full subscriber queue marks that subscriber slow."""
        ring = self._ring
        ring[header.batch_id] = header
        if len(ring) > self._ring_size:
            ring.popitem(last=False)
        position = header.position
        if position is not None and (self._position is None or position > self._position):
            self._position = position
        subs = [s for s in self._by_project.get(header.project_id, ()) if s.filter.matches(header)]
        if not subs or not rows:
            return
        batch = events(header, rows)
        self.published += len(batch)
        for sub in subs:
            sub.offer(batch)

    def notify_alarm(self, message: dict[str, Any]) -> None:
        """An alarm transition (loop thread): to every subscriber whose filter matches,
        after the batches announced before it (the one that raised it among them)."""
        if self.state == "stopped":
            return
        try:
            notice = AlarmNotice(message)
        except (KeyError, ValueError, TypeError):
            log.exception("malformed alarm message ignored")
            return
        self._incoming.append(_Announced(notice.header, None, notice=notice))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(
                self._drain(), name="live-dispatch"
            )

    def _deliver(self, notice: AlarmNotice) -> None:
        h = notice.header
        for sub in self._by_project.get(h.project_id, ()):
            if sub.filter.matches(h):
                sub.notice(notice)

    def notify_alarms_soon(self, messages: list[dict[str, Any]]) -> None:
        """:meth:`notify_alarm` each, from any thread (after a commit)."""
        loop = self._loop
        if self.state != "running" or loop is None:
            return
        for message in messages:
            loop.call_soon_threadsafe(self.notify_alarm, message)

    # --- out: subscribers -----------------------------------------------------------------

    async def subscribe(self, flt: StreamFilter, last_event_id: str | None = None) -> Subscriber:
        """Register a client (loop thread). With ``last_event_id`` (a reading's id or a
        :func:`position_id`), the events after it that match are read from the database and
        delivered first; nothing announced meanwhile is lost or delivered twice. Otherwise,
        or if that point is lost, the stream starts at the commit position now
        (``sub.start``)."""
        sub = self.subscribe_now(flt)
        here = self._position  # before any wait: what is dispatched from now on is the sub's
        try:
            if last_event_id:
                await self._resume(sub, last_event_id)
            if sub.start is None:
                await self._start_at(sub, here)
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    def subscribe_now(self, flt: StreamFilter) -> Subscriber:
        """Register a client that follows live only (loop thread)."""
        sub = Subscriber(flt, self.queue_size)
        self._by_project.setdefault(flt.project_id, set()).add(sub)
        self.unwatched.clear()
        if self.closing:
            sub.cut_off(reason="shutdown")
        return sub

    async def _start_at(self, sub: Subscriber, position: int | None) -> None:
        """Start the stream at ``position`` (else the database's newest): it delivers what
        commits after it, which is what a resume from ``sub.start`` delivers too."""
        if position is None:
            if self.store is None:
                return
            # Nothing dispatched here yet (a new process, or after a resync). Batches
            # dispatched while this is read are dropped by the floor if it counts them.
            position = await asyncio.to_thread(self.store.position)
            if self._position is None or position > self._position:
                self._position = position
        sub.resume_after((), position)
        sub.start = position_id(position)

    async def _resume(self, sub: Subscriber, last_event_id: str) -> None:
        """Fill ``sub.backlog`` with what follows ``last_event_id`` and start the stream
        there; or mark the point lost (``resume_lost``)."""
        position = parse_position(last_event_id)
        if position is not None and self.store is not None:
            await self._resume_at_position(sub, position)
        else:
            await self._resume_after_reading(sub, last_event_id)
        if not sub.resume_lost:
            sub.start = last_event_id

    async def _resume_at_position(self, sub: Subscriber, position: int) -> None:
        """What committed after a commit position (where a stream started), read from the
        batch table: a client comes back with it seldom, and often to another process."""
        assert self.store is not None
        after = await asyncio.to_thread(
            self.store.headers_since, sub.filter, position, self.resume_limit
        )
        if after is None or sum(h.count for h in after) > self.resume_limit:
            sub.resume_lost = True
            return
        await self._replay(sub, after, position, 0)

    async def _resume_after_reading(self, sub: Subscriber, last_event_id: str) -> None:
        point = parse_event_id(last_event_id)
        if point is None or self.store is None:
            sub.resume_lost = True
            return
        batch_id, index = point
        after = self._after_in_ring(sub.filter, batch_id)
        if after is None:
            # Not dispatched here: this process started later, forgot it (ring size, resync)
            # or is behind (its LISTEN has not brought the batch yet). The batch table has
            # what committed after it, in commit order; batches offered meanwhile are sorted
            # out by resume_after.
            after = await asyncio.to_thread(
                self.store.headers_after, sub.filter, batch_id, self.resume_limit + index + 1
            )
        if (
            not after
            or after[0].batch_id != batch_id
            or index >= after[0].count
            or sum(h.count for h in after) - index - 1 > self.resume_limit
        ):
            sub.resume_lost = True
            return
        await self._replay(sub, after, after[0].position, index + 1)

    async def _replay(
        self, sub: Subscriber, after: Sequence[BatchHeader], floor: int | None, skip: int
    ) -> None:
        """The backlog is ``after`` in commit order (less the first ``skip`` readings of its
        first batch); the live queue keeps only what committed later still (it is delivered
        after the backlog)."""
        sub.resume_after(after, floor)
        if not after:
            return
        rows = await self._read(after)
        backlog: list[LiveEvent] = []
        for h in after:
            start = skip if h is after[0] else 0
            backlog += events(h, rows.get(h.batch_id, []), start)
        sub.backlog = backlog

    def _after_in_ring(self, flt: StreamFilter, batch_id: int) -> list[BatchHeader] | None:
        """The resume batch and the matching batches announced after it, or None if the ring
        does not hold it."""
        first = self._ring.get(batch_id)
        if first is None or not flt.matches(first):
            return None
        found, out = False, [first]
        for bid, h in self._ring.items():
            if found and flt.matches(h):
                out.append(h)
            found = found or bid == batch_id
        return out

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._by_project.get(sub.filter.project_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_project[sub.filter.project_id]
                if not self._by_project:
                    self.unwatched.set()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_project.values())


SendEvents = Callable[[Sequence[LiveEvent]], Awaitable[None]]

#: Events handed to one send call at most (a resume backlog goes out in slices). As many as
#: the edge's default batch (``batch_size = 1000``): a batch split in two reached a client
#: about 5 ms later for its second half.
SEND_SLICE = 1000


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
            raise sub.cut_off_error()
        try:
            async with asyncio.timeout(keepalive_s if keepalive else None):
                taken = await sub.take()
        except TimeoutError:
            assert keepalive is not None
            await keepalive()
            continue
        await _send_all(sub, send, taken)


async def _send_all(sub: Subscriber, send: SendEvents, evs: Sequence[LiveEvent]) -> None:
    for i in range(0, len(evs), SEND_SLICE):
        await _send_or_overflow(sub, send, evs[i : i + SEND_SLICE])


async def _send_or_overflow(sub: Subscriber, send: SendEvents, evs: Sequence[LiveEvent]) -> None:
    sending = asyncio.ensure_future(send(evs))
    overflow = asyncio.ensure_future(sub.overflowed.wait())
    try:
        await asyncio.wait({sending, overflow}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        overflow.cancel()
        if not sending.done():
            sending.cancel()
    if sending.cancelled() or sub.overflowed.is_set():
        raise sub.cut_off_error()
    sending.result()
