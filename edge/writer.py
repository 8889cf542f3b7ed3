"""Group commit: sources queue writes, one coroutine commits many of them per transaction.

A source awaits :meth:`Writer.submit`; it returns only after the write is durable (one fsync
for the whole group), so the source may then acknowledge to the device. Under load a group
grows, so throughput scales without one fsync per reading.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Literal

from edge.buffer import Buffer, BufferFull, Write, WriteResult
from edge.metrics import EdgeMetrics

log = logging.getLogger("benchlink.edge.writer")

#: most readings committed in one transaction
MAX_GROUP_READINGS = 5000


@dataclass
class _Pending:
    write: Write
    done: asyncio.Future[WriteResult]


class Writer:
    def __init__(self, buffer: Buffer, metrics: EdgeMetrics) -> None:
        self.buffer, self.metrics = buffer, metrics
        self.queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.state: Literal["new", "running", "draining", "stopped"] = "new"
        self.last_commit = time.monotonic()
        self._full_logged_at = 0.0

    def enqueue(self, write: Write) -> asyncio.Future[WriteResult]:
        """Queue ``write``; the future resolves after its commit (futures resolve in order)."""
        if self.state in ("draining", "stopped"):
            raise RuntimeError("writer is shutting down")
        done: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Pending(write, done))
        self.metrics.queue_depth.set(self.queue.qsize())
        return done

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
                size = len(first.write.readings)
                while size < MAX_GROUP_READINGS and not self.queue.empty():
                    nxt = self.queue.get_nowait()
                    if nxt is None:
                        closing = True
                        break
                    group.append(nxt)
                    size += len(nxt.write.readings)
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
        try:
            results = await self.buffer.call(self.buffer.commit, [p.write for p in group])
        except Exception as exc:
            self.metrics.errors.labels("buffer_commit").inc()
            log.exception("commit of %d writes failed", len(group))
            for p in group:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        self.last_commit = time.monotonic()
        self.metrics.queue_depth.set(self.queue.qsize())
        for p, result in zip(group, results, strict=True):
            if p.done.done():  # the submitter was cancelled
                continue
            if isinstance(result, BufferFull):
                self._loud_full(result)
                p.done.set_exception(result)
            else:
                if result.dead:
                    self.metrics.dead_lettered.labels("input").inc(result.dead)
                p.done.set_result(result)

    def _loud_full(self, exc: BufferFull) -> None:
        self.metrics.errors.labels("buffer_full").inc()
        now = time.monotonic()
        if now - self._full_logged_at > 10:
            self._full_logged_at = now
            log.error(
                "BUFFER FULL (%d of %d bytes): new readings are refused until the cloud takes"
                " the backlog (MQTT messages stay unacked at the broker; serial lines are"
                " dropped and counted in benchlink_edge_readings_dropped_total)",
                exc.used,
                exc.limit,
            )

    async def close(self) -> None:
        """Stop taking writes, commit everything queued so far, and return when done."""
        if self.state == "running":
            self.state = "draining"
            self.queue.put_nowait(None)
