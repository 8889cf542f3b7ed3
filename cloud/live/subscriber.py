"""One client's side of the hub: its bounded queue, how it is cut off, and the pump that
sends it its events.

A client that cannot keep up is not waited for: its queue overflows, it is marked
:class:`SlowConsumer` and disconnected with a notice; it resumes by event id."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cloud.live.events import BatchHeader, LiveEvent, StreamFilter

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
