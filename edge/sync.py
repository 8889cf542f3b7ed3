"""Sync: seal readings into batches and send them to the cloud, in order, once.

One :class:`SensorSync` loop per sensor keeps at most one batch of that sensor in flight, so
the cloud receives each sensor's batches in order; sensors run in parallel, so a sensor whose
token was revoked does not hold back the others. Each batch is sent with its stable id as
``Idempotency-Key``: a retry after a lost response is dropped by the cloud, never doubled.

Outcomes of one attempt::

    202            -> synced
    no answer (refused, lost, timed out, unreadable), 408, 429, 5xx,
    409 idempotency-in-flight
                   -> retry the same batch (Retry-After honoured, else jittered backoff)
    409 conflict   -> retried twice (a race between two writers), then dead
    422 naming only readings.N
                   -> those readings to a dead batch, the rest re-sealed under a new id at
                      the same place in the queue (a definitive 422 stored nothing)
    other 4xx      -> dead-letter the batch with the cloud's reason, go on with the next

Anything else that goes wrong in a loop (the buffer busy or locked, a bug) is logged, counted
and retried with backoff: a sync loop never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from common.wire import TELEMETRY_PATH
from edge.backoff import Backoff, parse_retry_after
from edge.buffer import Batch, Buffer, is_disk_full
from edge.cloud_client import Answer, Poster, TransportError
from edge.config import SyncConfig
from edge.metrics import EdgeMetrics

log = logging.getLogger("benchlink.edge.sync")

#: longest wait honoured from a Retry-After header
MAX_RETRY_AFTER_S = 300.0
#: What to do about a refused token, after the cloud's reason: the batches wait in the
#: dead letters until the token is right.
TOKEN_HINT = (
    "; put the sensor's current token in the config, reload the daemon (SIGHUP: systemctl"
    " reload benchlink-edge), then run `benchlink-edge dead-letter retry`"
)
#: attempts of one batch answered "409 conflict" (a race) before it is dead-lettered
CONFLICT_ATTEMPTS = 3

#: A sync loop asks for a new connection after this many batches. uvicorn's workers share one
#: listening socket and a kept-alive connection stays with the worker that accepted it: a
#: drain over the daemon's few connections often ran on one worker while the other idled
#: (worker CPU 1.2 s vs 15.6 s). A new connection now and then may land on another worker
#: (or, behind a balancer of connections, another instance); a TCP/TLS handshake per this
#: many batches costs next to nothing.
RECONNECT_EVERY = 16

#: batches a sync loop keeps sealed ahead of the one it sends (see Buffer.seal)
SEAL_AHEAD = 4

_READING_FIELD = re.compile(r"^readings\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class Outcome:
    kind: Literal["synced", "retry", "dead", "split"]
    detail: str = ""
    retry_after: float | None = None
    accepted: int | None = None
    late: int | None = None
    #: split: index of each refused reading -> the cloud's reason
    refused: dict[int, str] = field(default_factory=dict)
    #: a 409 conflict: retryable a few times only
    conflict: bool = False


def refused_readings(body: object) -> dict[int, str]:
    """``{index: reason}`` when every field error of a 422 names a reading, else empty."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return {}
    refused: dict[int, str] = {}
    for e in errors:
        m = _READING_FIELD.match(str(e.get("field", ""))) if isinstance(e, dict) else None
        if m is None:
            return {}
        i = int(m.group(1))
        reason = f"{e['field']}: {e.get('reason')}"
        refused[i] = f"{refused[i]}; {reason}" if i in refused else reason
    return refused


def problem_reason(response: Answer) -> str:
    """A one-line reason from a problem+json answer (or the raw text)."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status}: {response.text[:300]}"
    if not isinstance(body, dict):
        return f"{response.status}: {str(body)[:300]}"
    parts = [f"{response.status} {body.get('title') or response.reason}"]
    if body.get("detail"):
        parts.append(str(body["detail"]))
    errors = body.get("errors") or []
    if errors:
        parts.append("; ".join(f"{e.get('field')}: {e.get('reason')}" for e in errors[:5]))
    return ": ".join(parts)[:1000]


def classify(response: Answer) -> Outcome:
    status = response.status
    if status in (200, 201, 202):
        return _synced(response)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    reason = problem_reason(response)
    if status in (408, 429) or status >= 500:
        return Outcome("retry", reason, retry_after)
    return _refused(response, reason, retry_after)


def _synced(response: Answer) -> Outcome:
    try:
        body = response.json()
        return Outcome("synced", accepted=body.get("accepted"), late=body.get("late"))
    except (ValueError, AttributeError):
        return Outcome("synced")


def _refused(response: Answer, reason: str, retry_after: float | None) -> Outcome:
    """A 4xx other than 408 and 429: retried (the batch's key in flight, a conflict), split
    (readings refused) or dead."""
    status = response.status
    try:
        body = response.json()
    except ValueError:
        body = None
    kind = str(body.get("type", "")) if isinstance(body, dict) else ""
    if status == 409 and kind.endswith("idempotency-in-flight"):
        return Outcome("retry", reason, retry_after)
    if status == 409 and kind.endswith("/conflict"):
        return Outcome("retry", reason, retry_after, conflict=True)
    if status == 422 and (refused := refused_readings(body)):
        return Outcome("split", reason, refused=refused)
    return Outcome("dead", reason)


async def send_batch(client: Poster, buffer: Buffer, batch: Batch) -> Outcome:
    """One attempt at one batch. The token goes in a header only (never in URL or logs)."""
    body, token = await buffer.call(
        lambda: (buffer.batch_body(batch.id), buffer.token(batch.sensor_id))
    )
    await buffer.call(buffer.mark_inflight, batch.id)
    return await post_batch(client, Ready(batch, encode(body), token))


def encode(body: dict[str, object]) -> bytes:
    # msgspec, not json.dumps: a tenth of the time (json.dumps of a 1000-reading body was the
    # largest single cost on the buffer's thread while draining a backlog). Floats are written
    # in their shortest round-trip form either way; the cloud compares batches by meaning.
    return msgspec.json.encode(body)


@dataclass(frozen=True)
class Ready:
    """A batch read from the buffer with its body encoded, ready to be posted."""

    batch: Batch
    content: bytes
    token: str


async def post_batch(client: Poster, ready: Ready, *, close: bool = False) -> Outcome:
    """``close``: ask for the connection to be closed after the answer (see RECONNECT_EVERY)."""
    headers = {
        "Authorization": f"Bearer {ready.token}",
        "Idempotency-Key": ready.batch.id,
        "Content-Type": "application/json",
    }
    if close:
        headers["Connection"] = "close"
    try:
        response = await client.post(TELEMETRY_PATH, ready.content, headers)
    except TransportError as exc:
        return Outcome("retry", str(exc))
    if response.status == 422 and seq_unknown(response) and b'"seq"' in ready.content:
        # A cloud older than sequence numbers refuses the field as unknown, and stored
        # nothing: the same readings without it (counted there without edge accounting)
        # rather than every batch dead-lettered until the cloud is upgraded.
        plain = msgspec.json.decode(ready.content)
        plain.pop("seq", None)
        log.warning(
            "batch %s: the cloud does not know sequence numbers (older than this edge);"
            " sent without them",
            ready.batch.id,
        )
        return await post_batch(client, Ready(ready.batch, encode(plain), ready.token), close=close)
    return classify(response)


def seq_unknown(response: Answer) -> bool:
    """A 422 whose every field error is about ``seq`` (a cloud that predates the field)."""
    try:
        body = response.json()
    except ValueError:
        return False
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return False
    return all(
        isinstance(e, dict)
        and str(e.get("field", "")).split(".")[0] == "seq"
        and "extra" in str(e.get("reason", "")).lower()
        for e in errors
    )


class SensorSync:
    """The send loop of one sensor. ``state`` says what it is doing, for status and tests."""

    def __init__(
        self,
        sensor_id: str,
        buffer: Buffer,
        client: Poster,
        sync: SyncConfig,
        metrics: EdgeMetrics,
    ) -> None:
        self.sensor_id = sensor_id
        self.buffer, self.client, self.cfg, self.metrics = buffer, client, sync, metrics
        self.backoff = Backoff(sync.backoff_initial_s, sync.backoff_max_s)
        self.state: Literal["idle", "sending", "backoff", "stopped"] = "idle"
        self.wake = asyncio.Event()
        #: batches posted by :meth:`drain`
        self.posts = 0
        #: called after each round that posted something, with the sensor and whether the
        #: round got its batches answered (False: it ends in a retry); the daemon's heartbeat
        self.on_round: Callable[[str, bool], None] | None = None

    async def seal(self, *, everything: bool = False) -> int:
        # Half the interval for the last partial batch plus half for the send loop's tick:
        # a reading waits at most about ``interval_s`` before it leaves.
        older_than = None if everything else time.time() - self.cfg.interval_s / 2
        return await self.buffer.call(
            self.buffer.seal, self.sensor_id, self.cfg.batch_size, older_than=older_than
        )

    async def send_faults(self) -> Outcome | None:
        """The sensor's device faults the cloud has not seen, sent before any later batch
        (see :mod:`edge.sync_faults`); None when none is left, else the outcome to retry."""
        if self.sensor_id not in self.buffer.fault_sensors:
            return None
        from edge.sync_faults import send_faults  # it builds on this module

        return await send_faults(self.client, self.buffer, self.sensor_id)

    async def step(self) -> Outcome | None:
        """Send the next batch once; None when there is nothing to send."""
        if (faults := await self.send_faults()) is not None:
            return faults
        batch = await self.buffer.call(self.buffer.next_batch, self.sensor_id)
        if batch is None:
            return None
        self.state = "sending"
        outcome = await send_batch(self.client, self.buffer, batch)
        return await self.record(batch, outcome)

    async def record(
        self, batch: Batch, outcome: Outcome, then_inflight: str | None = None
    ) -> Outcome:
        """Store the outcome; return it (a conflict retried too often comes back as dead).
        ``then_inflight``: the next batch, posted already (recorded with a "synced")."""
        if outcome.conflict and batch.attempts + 1 >= CONFLICT_ATTEMPTS:
            outcome = Outcome("dead", outcome.detail)
        if outcome.kind == "synced":
            await self.buffer.call(
                lambda: self.buffer.mark_synced(
                    batch.id, outcome.accepted, outcome.late, then_inflight=then_inflight
                )
            )
            self.metrics.synced.labels(self.sensor_id).inc(batch.count)
            self.backoff.reset()
        elif outcome.kind == "split":
            new_id = await self.buffer.call(
                self.buffer.split_batch, batch.id, outcome.refused, outcome.detail
            )
            self.metrics.dead_lettered.labels("batch").inc()
            self.backoff.reset()
            log.error(
                "batch %s of sensor %s: %d of %d readings refused and dead-lettered (%s);"
                " the rest goes again as batch %s",
                batch.id,
                self.sensor_id,
                len(outcome.refused),
                batch.count,
                outcome.detail,
                new_id or "- (none left)",
            )
        elif outcome.kind == "dead":
            await self.buffer.call(self.buffer.mark_dead, batch.id, outcome.detail)
            self.metrics.dead_lettered.labels("batch").inc()
            self.backoff.reset()  # a verdict, not a failure: the next batch starts afresh
            log.error(
                "batch %s of sensor %s (%d readings) dead-lettered: %s%s",
                batch.id,
                self.sensor_id,
                batch.count,
                outcome.detail,
                TOKEN_HINT if outcome.detail.startswith("401") else "",
            )
        else:
            await self.buffer.call(self.buffer.mark_retry, batch.id, outcome.detail)
            self.metrics.errors.labels("sync_retry").inc()
        return outcome

    def retry_delay(self, outcome: Outcome) -> float:
        delay = self.backoff.next()
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER_S))
        return delay

    def _prepare(self, after: int | None) -> Ready | None:
        """On the buffer's thread: seal a few batches ahead, then read and encode the next
        batch to send (the oldest, or the one behind ``after``). One hop to the thread."""
        buf = self.buffer
        older_than = time.time() - self.cfg.interval_s / 2
        buf.seal(self.sensor_id, self.cfg.batch_size, older_than=older_than, ahead=SEAL_AHEAD)
        with buf.snapshot():  # the batch and its body as one (see Buffer.snapshot)
            batch = buf.next_batch(self.sensor_id, after)
            if batch is None:
                return None
            body, token = buf.batch_body(batch.id), buf.token(batch.sensor_id)
        return Ready(batch, encode(body), token)

    async def drain(self) -> Outcome | None:
        """Send batches while there are any, one in flight, in order. While a batch is on its
        way, the next one is sealed, read and encoded, and the previous one recorded, so the
        wire is busy for more of the time (the buffer's work overlaps the cloud's). Return the
        first outcome that is not "synced" (already recorded), the "synced" one of the batch
        after which a device fault came (sent first, at the next call), or None when nothing
        is left.

        Order and exactly-once are those of :meth:`step`: a batch is posted only after the one
        before it was accepted; the prepared next batch is dropped after any other outcome
        (a split re-seals the queue, a retry sends the same batch again)."""
        buf = self.buffer
        while True:
            if (faults := await self.send_faults()) is not None:
                return faults
            ready = await buf.call(self._prepare, None)
            if ready is None:
                return None
            # a fault committed meanwhile may precede readings of this batch: it goes first
            if self.sensor_id not in buf.fault_sensors:
                break
        await buf.call(buf.mark_inflight, ready.batch.id)
        posting: asyncio.Future[Outcome] | None = None
        ahead: asyncio.Future[Ready | None] | None = None
        recording: asyncio.Future[Outcome] | None = None
        try:
            while ready is not None:
                self.state = "sending"
                self.posts += 1
                close = self.posts % RECONNECT_EVERY == 0
                posting = asyncio.ensure_future(post_batch(self.client, ready, close=close))
                ahead = asyncio.ensure_future(buf.call(self._prepare, ready.batch.seq))
                if recording is not None:
                    await recording  # the previous batch's "synced" (and this one's inflight)
                    recording = None
                outcome = await posting
                nxt = await ahead
                posting = ahead = None
                if outcome.kind != "synced":
                    return await self.record(ready.batch, outcome)
                if self.sensor_id in buf.fault_sensors:  # a fault came: before what follows it
                    return await self.record(ready.batch, outcome)
                then = nxt.batch.id if nxt is not None else None
                recording = asyncio.ensure_future(self.record(ready.batch, outcome, then))
                ready = nxt
            if recording is not None:
                await recording
                recording = None
            return None
        finally:
            # Only after a failure: what is still running is dropped (a batch posted and not
            # recorded goes again under its key, and the cloud answers it as a replay).
            for task in (posting, ahead, recording):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def run(self) -> None:
        tick = self.cfg.interval_s / 2
        try:
            while True:
                posts = self.posts
                try:
                    outcome = await self.drain()
                    if self.posts != posts and self.on_round is not None:
                        self.on_round(self.sensor_id, outcome is None or outcome.kind != "retry")
                except Exception as exc:  # "database is locked", a bug: never fatal
                    self.state = "backoff"
                    self.metrics.errors.labels("sync_unexpected").inc()
                    delay = self.backoff.next()
                    if is_disk_full(exc):  # expected, not a bug: one line, no traceback
                        self.metrics.errors.labels("disk_full").inc()
                        log.warning(
                            "sensor %s: sync step failed, the disk is full (%s); retrying in %.1fs",
                            self.sensor_id,
                            exc,
                            delay,
                        )
                        await self._sleep(delay)
                        continue
                    log.exception(
                        "sensor %s: sync step failed (%s); retrying in %.1fs",
                        self.sensor_id,
                        type(exc).__name__,
                        delay,
                    )
                    await self._sleep(delay)
                    continue
                if outcome is None:
                    self.state = "idle"
                    # episodes another process queued again (`dead-letter retry`) go now
                    if not await self.buffer.call(self.buffer.recheck_faults, self.sensor_id):
                        await self._sleep(tick)
                elif outcome.kind == "retry":
                    self.state = "backoff"
                    delay = self.retry_delay(outcome)
                    log.warning(
                        "sensor %s: sync failed (%s); retrying in %.1fs",
                        self.sensor_id,
                        outcome.detail,
                        delay,
                    )
                    await self._sleep(delay)
        finally:
            self.state = "stopped"

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        except TimeoutError:
            pass


@dataclass
class FlushReport:
    total: int = 0
    synced: int = 0
    dead: int = 0
    #: sensor id -> the last error of a sensor that gave up
    failed: dict[str, str] = field(default_factory=dict)


async def flush(
    buffer: Buffer,
    client: Poster,
    sync: SyncConfig,
    metrics: EdgeMetrics,
    *,
    max_attempts: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> FlushReport:
    """Seal everything and send every unsent batch now (the ``flush`` and ``replay`` CLI).

    Sensors go in parallel; a sensor gives up after ``max_attempts`` retryable failures in a
    row (its batches stay queued for the daemon)."""
    sensor_ids = [s["sensor_id"] for s in await buffer.call(buffer.sensors)]
    loops = [SensorSync(sid, buffer, client, sync, metrics) for sid in sensor_ids]
    for loop in loops:
        await loop.seal(everything=True)
    report = FlushReport(total=await buffer.call(buffer.unsent_batches))

    async def drain(loop: SensorSync) -> None:
        failures = 0
        while True:
            try:
                outcome = await loop.step()
            except Exception as exc:  # e.g. the daemon holds the write lock too long
                outcome = Outcome("retry", f"{type(exc).__name__}: {exc}"[:500])
            if outcome is None:
                return
            if outcome.kind == "retry":
                failures += 1
                if failures >= max_attempts:
                    report.failed[loop.sensor_id] = outcome.detail
                    return
                await asyncio.sleep(loop.retry_delay(outcome))
                continue
            failures = 0
            if outcome.kind == "synced":
                report.synced += 1
            else:
                report.dead += 1
            if progress is not None:
                progress(report.synced + report.dead, report.total)

    async with asyncio.TaskGroup() as tg:
        for loop in loops:
            tg.create_task(drain(loop), name=f"flush:{loop.sensor_id}")
    return report
