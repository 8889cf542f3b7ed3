"""The process-wide live hub: batch headers in, per-client bounded queues out.

* A stored batch is announced by its :class:`~cloud.live.events.BatchHeader` alone (ids,
  unit, count, first and last timestamp). On SQLite the ingest's after-commit listener
  announces it in this process; on PostgreSQL the ingest transaction NOTIFYs the header
  (:mod:`cloud.live.pgbus`) and every process announces what its LISTEN connection receives.
* Rows are only wanted where someone watches: a process with no subscriber whose filter
  matches a header does nothing more with it. Otherwise it takes the rows the ingest left in
  this process (:meth:`Hub.keep`) or reads that batch back from the database, once however
  many subscribers match. Announced batches are dispatched strictly in announcement order
  (a read in flight holds back the batches behind it).
* Every subscriber owns a bounded queue (:mod:`cloud.live.subscriber`). A client that cannot
  keep up is not waited for: its queue overflows, it is marked ``SlowConsumer`` and
  disconnected with a notice; it can reconnect with the last event id it saw and resume
  without a gap. The hub cuts clients off the same way, with another ``reason``, when it
  cannot vouch for what they would get next (a resync after a LISTEN outage, a failed
  read-back) and when the server shuts down.
* Resume reads the readings after that id from the database. Event ids are
  ``"<batch_id>-<index in batch>"``, the same in every process. "After" means committed
  after: batches are dispatched in commit order, and each has a commit ``position``
  (:mod:`cloud.live.positions`; batch ids are drawn at insert time and say nothing of it).
  Which batches follow the id is taken from a ring of the newest headers (in dispatch order,
  a few hundred bytes per batch), else from the batch table in position order (a process
  that started after the id was given, forgot it, or has not dispatched it yet); a resume
  point older than ``resume_limit`` readings is answered with ``reset``.
* A subscription starts at a commit position, ``"p<position>"``
  (:func:`~cloud.live.events.position_id`): the highest this process has dispatched (else
  the database's newest). The stream delivers what commits after it, and a client resumes
  from it as from a reading's id, so that a connection dropped before its first reading
  misses nothing stored meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cloud.live.events import (
    AlarmNotice,
    BatchHeader,
    LiveEvent,
    Row,
    StreamFilter,
    events,
    live_rows,
    parse_event_id,
    parse_position,
    position_id,
)
from cloud.live.ports import Bus, Store
from cloud.live.subscriber import Subscriber
from cloud.services.telemetry import IngestedBatch
from cloud.store.telemetry.base import StoredBatch

log = logging.getLogger("benchlink.live")


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
