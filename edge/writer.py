"""Group commit: sources queue writes, one coroutine commits many of them per transaction.

A source awaits :meth:`Writer.submit`; it returns only after the write is durable (one fsync
for the whole group), so the source may then acknowledge to the device. Under load a group
grows, so throughput scales without one fsync per reading.

A group shares one transaction, so one write that cannot be stored would fail them all: when a
group commit raises, its writes are committed again one at a time and the one that still fails
is dead-lettered (with its delivery's inbox row, so the message is acked and never comes back).

When the buffer is full, a refused write *blocks its source*: every later write of that source
is refused too, until the source re-submits the refused one with ``probe=True`` and it is
committed. A source's writes therefore commit in the order it submitted them, also across a
full buffer (a later message can never slip in before a refused one).

A full filesystem is a full buffer: the buffer refuses writes once the disk is down to its
reserve (``buffer.min_free_bytes``), and a commit that still fails with SQLITE_FULL (another
process ate the reserve) refuses its whole group the same way -- nothing is dead-lettered
(that would need the space that is missing), nothing is acked. An episode of refusals is
logged once when it starts and once when writes go in again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from edge.buffer import Buffer, BufferFull, DeadLetter, Write, WriteResult, is_disk_full, show
from edge.metrics import EdgeMetrics

log = logging.getLogger("benchlink.edge.writer")

#: most readings committed in one transaction
MAX_GROUP_READINGS = 5000


#: what one write became: committed (or dropped as a copy), or refused for a full buffer
Outcome = WriteResult | BufferFull


@dataclass(eq=False, slots=True)
class _Pending:
    """Writes of one source that resolve together. A source that hands over a whole burst of
    MQTT messages at once pays for one future and one queue entry, not one per message."""

    writes: list[Write]
    #: one write: its WriteResult (BufferFull raised); several: the list of their outcomes
    done: asyncio.Future[Any]
    probe: bool = False
    many: bool = False
    readings: int = 0


class Writer:
    def __init__(self, buffer: Buffer, metrics: EdgeMetrics) -> None:
        self.buffer, self.metrics = buffer, metrics
        self.queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.state: Literal["new", "running", "draining", "stopped"] = "new"
        self.last_commit = time.monotonic()
        self.commits = 0
        #: since when the current group commit runs (None between commits)
        self.committing_since: float | None = None
        #: sources whose last write was refused for a full buffer (see the module docstring)
        self.blocked: set[str] = set()
        #: the refusal that opened the current episode of a full buffer (None: not full)
        self.full: BufferFull | None = None
        #: writes refused since that episode began
        self.refused_in_episode = 0

    def enqueue(self, write: Write, *, probe: bool = False) -> asyncio.Future[WriteResult]:
        """Queue ``write``; the future resolves after its commit (futures resolve in order).

        ``probe``: the source re-submits its refused write; committed, it unblocks the source."""
        done: asyncio.Future[WriteResult] = self._put([write], probe, many=False)
        return done

    def enqueue_many(
        self, writes: list[Write], *, probe: bool = False
    ) -> asyncio.Future[list[Outcome]]:
        """Queue the writes of one source, in order, to be committed in one group; the future
        resolves after that commit with each write's outcome (BufferFull is returned in the
        list, not raised: with the one-at-a-time fallback, some may go in and some not)."""
        done: asyncio.Future[list[Outcome]] = self._put(writes, probe, many=True)
        return done

    def _put(self, writes: list[Write], probe: bool, *, many: bool) -> asyncio.Future[Any]:
        if self.state in ("draining", "stopped"):
            raise RuntimeError("writer is shutting down")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        size = sum(len(w.readings) for w in writes) if many else len(writes[0].readings)
        self.queue.put_nowait(_Pending(writes, done, probe, many, size))
        self.metrics.queue_depth.set(self.queue.qsize())
        return done

    def healthy(self, stall_s: float) -> bool:
        """Running and making progress: not stuck in one commit, not sitting on a queue."""
        if self.state != "running":
            return False
        now = time.monotonic()
        if self.committing_since is not None and now - self.committing_since > stall_s:
            return False
        return self.queue.empty() or now - self.last_commit <= stall_s

    async def submit(self, write: Write, source: str = "") -> WriteResult:
        """Queue ``write`` and wait until it is committed; raise BufferFull if refused."""
        result = await self.enqueue(write)
        if source and result.committed:
            self.metrics.committed.labels(source).inc(result.committed)
        return result

    async def run(self) -> None:
        """Commit until :meth:`close` has been called and the queue is empty."""
        self.state = "running"
        try:
            while True:
                first = await self.queue.get()
                if first is None:
                    return
                group, closing = [first], False
                size = first.readings
                while size < MAX_GROUP_READINGS and not self.queue.empty():
                    nxt = self.queue.get_nowait()
                    if nxt is None:
                        closing = True
                        break
                    group.append(nxt)
                    size += nxt.readings
                await self._commit(group)
                if closing:
                    return
        finally:
            self.state = "stopped"
            # Nothing more will be committed: fail whatever is still queued (it was never acked).
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None and not item.done.done():
                    item.done.set_exception(RuntimeError("writer stopped"))

    async def _commit(self, group: list[_Pending]) -> None:
        live = self._unblocked(group)
        writes = [w for p in live for w in p.writes]
        self.committing_since = time.monotonic()
        try:
            results = await self._commit_group(writes)
        finally:
            self.committing_since = None
        self.last_commit = time.monotonic()
        self.commits += 1
        self.metrics.queue_depth.set(self.queue.qsize())
        if self.full is not None and any(not isinstance(r, BaseException) for r in results):
            self._room_again()
        at = 0
        for p in live:
            mine = results[at : at + len(p.writes)]
            at += len(p.writes)
            self._note(p, mine)
            if not p.done.done():  # else the submitter was cancelled
                _answer(p, mine)

    def _unblocked(self, group: list[_Pending]) -> list[_Pending]:
        """The group but for the writes of blocked sources (a probe excepted): those are
        refused at once, with the refusal that blocked them."""
        live: list[_Pending] = []
        for p in group:
            if p.writes[0].source in self.blocked and not p.probe:
                if not p.done.done():
                    full = self.full or BufferFull(self.buffer.max_bytes, self.buffer.max_bytes)
                    self.refused_in_episode += len(p.writes)
                    if p.many:
                        p.done.set_result([full] * len(p.writes))
                    else:
                        p.done.set_exception(full)
            else:
                live.append(p)
        return live

    def _note(self, p: _Pending, mine: list[WriteResult | BufferFull | Exception]) -> None:
        """What a submission's results say about its source (blocked, or free again) and the
        buffer (full, dead letters)."""
        source = p.writes[0].source
        refused = next((r for r in mine if isinstance(r, BufferFull)), None)
        if refused is not None and source:
            self.blocked.add(source)
        elif p.probe:
            self.blocked.discard(source)
        if refused is not None:
            self._loud_full(refused, sum(isinstance(r, BufferFull) for r in mine))
        dead = sum(r.dead for r in mine if isinstance(r, WriteResult))
        if dead:
            self.metrics.dead_lettered.labels("input").inc(dead)

    async def _commit_group(
        self, writes: list[Write]
    ) -> list[WriteResult | BufferFull | Exception]:
        """Commit the writes in one transaction; if that fails, one write at a time, and
        dead-letter a write that fails on its own (the others must not pay for it)."""
        call, commit = self.buffer.call, self.buffer.commit
        try:
            return list(await call(commit, writes))
        except Exception as exc:
            if is_disk_full(exc):
                # Past the reserve already: one at a time or as dead letters would fail the
                # same way. Refused, the sources apply the policy (MQTT holds, serial counts).
                full = await self._disk_full()
                return [full] * len(writes)
            self.metrics.errors.labels("buffer_commit").inc()
            log.exception("group commit of %d writes failed; one by one now", len(writes))
        out: list[WriteResult | BufferFull | Exception] = []
        for write in writes:
            result: WriteResult | BufferFull | Exception
            try:
                (result,) = await call(commit, [write])
            except Exception as exc:
                if is_disk_full(exc):
                    out.append(await self._disk_full())
                    continue
                result = await self._dead_letter_write(write, exc)
            out.append(result)
        return out

    async def _dead_letter_write(
        self, write: Write, exc: Exception
    ) -> WriteResult | BufferFull | Exception:
        reason = f"cannot be stored: {type(exc).__name__}: {exc}"[:1000]
        log.error("a write of %d reading(s) dead-lettered: %s", len(write.readings), reason)
        sensor = write.readings[0].sensor_id if write.readings else None
        letter = DeadLetter("write", reason, sensor_id=sensor, payload=_show(write))
        stand_in = Write(dead=[letter, *write.dead], source=write.source, delivery=write.delivery)
        try:
            (result,) = await self.buffer.call(self.buffer.commit, [stand_in])
        except Exception as again:
            log.exception("cannot even dead-letter the write")
            return again
        return result

    async def _disk_full(self) -> BufferFull:
        """The refusal for a commit the filesystem refused (what the buffer measures now)."""
        b = self.buffer

        def measure() -> BufferFull:
            return BufferFull(
                b.used_bytes(), b.max_bytes, room=b.disk_room(), reserve=b.min_free_bytes
            )

        try:
            return await b.call(measure)
        except Exception:  # cannot even measure: say nothing is left
            return BufferFull(b.max_bytes, b.max_bytes, room=0, reserve=b.min_free_bytes)

    def _loud_full(self, exc: BufferFull, writes: int) -> None:
        """Count each refusal; log when an episode begins (or its cause changes), not per
        write: a full disk must not fill the journal as well, whatever the rate of readings."""
        self.metrics.errors.labels("buffer_full").inc()
        self.refused_in_episode += writes
        if self.full is not None and self.full.cause == exc.cause:
            return
        self.full = exc
        then = (
            " until the cloud takes the backlog (MQTT messages stay unacked at the broker;"
            " serial lines are dropped and counted in benchlink_edge_readings_dropped_total)"
        )
        if exc.cause == "disk":
            log.error(
                "BUFFER FULL: the disk is full (%d bytes left for the buffer, %d kept free by"
                " buffer.min_free_bytes): new readings are refused%s or space is freed on %s",
                exc.room,
                exc.reserve,
                then,
                self.buffer.path.parent,
            )
        else:
            log.error(
                "BUFFER FULL (%d of %d bytes): new readings are refused%s",
                exc.used,
                exc.limit,
                then,
            )

    def _room_again(self) -> None:
        """A write went in: the episode of a full buffer is over."""
        if self.full is None:
            return
        log.warning(
            "buffer takes new readings again (%d write(s) were refused while the %s was full)",
            self.refused_in_episode,
            "disk" if self.full.cause == "disk" else "buffer",
        )
        self.full, self.refused_in_episode = None, 0

    async def close(self) -> None:
        """Stop taking writes, commit everything queued so far, and return when done."""
        if self.state == "running":
            self.state = "draining"
            self.queue.put_nowait(None)


def _answer(p: _Pending, mine: list[WriteResult | BufferFull | Exception]) -> None:
    """Resolve a submission: several writes get their outcomes (a refusal among them is an
    outcome, another failure raises); one write gets its result or raises its failure."""
    if p.many:
        failed = next((r for r in mine if isinstance(r, BaseException)), None)
        if failed is not None and not isinstance(failed, BufferFull):
            p.done.set_exception(failed)
        else:
            p.done.set_result(mine)
    elif isinstance(mine[0], BaseException):
        p.done.set_exception(mine[0])
    else:
        p.done.set_result(mine[0])


def _show(write: Write) -> str:
    return "\n".join(show(r) for r in write.readings[:20])[:4096]
