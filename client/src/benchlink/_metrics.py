"""``run.log_metrics()``: points sent in batches by a background thread, flushed at exit, and
kept in a local SQLite queue (:mod:`benchlink._outbox`) whenever the server cannot take them.

With ``offline_dir`` every point is committed to the queue before ``log_metrics`` returns
(it survives the process being killed). Without it, points wait in memory for the next
send (every ``interval`` seconds); a batch the server cannot be reached for goes to the
queue in ``~/.local/state/benchlink`` with its Idempotency-Key. Either way a queued point is
sent exactly once, by this process or the next client of the same cloud and identity.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlink import _times
from benchlink._exceptions import APIError, ServerError, TransportError
from benchlink._http import Http, Retry
from benchlink._outbox import Batch, Outbox

log = logging.getLogger("benchlink.client")

#: Most points the server takes in one request.
MAX_BATCH = 10_000
#: A flush asks once or twice, then leaves the rest queued for the background thread (which
#: retries with the client's patience): a notebook cell should not hang on a dead server.
FLUSH_RETRY = Retry(attempts=2, backoff=0.2, cap=1.0)
#: Errors that mean "not now": the points are kept for later.
UNREACHABLE = (TransportError, ServerError)


def default_offline_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "benchlink"


def point(name: str, value: float, step: int, unit: str | None, timestamp: Any) -> dict[str, Any]:
    """A point as the server takes it, checked here: one bad point would refuse its batch."""
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise ValueError(f"metric name {name!r}: 1 to 200 characters")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"metric {name!r}: {value!r} is not a finite number")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= 2**62:
        raise ValueError(f"step {step!r}: an integer from 0 to 2**62")
    body: dict[str, Any] = {"name": name, "step": step, "value": number}
    body["timestamp"] = _times.wire(timestamp if timestamp is not None else _times.now())
    if unit is not None:
        body["unit"] = unit
    return body


class MetricsLogger:
    def __init__(self, http: Http, offline_dir: str | None, *, interval: float = 1.0) -> None:
        cfg = http.config
        self._http = http
        self._scope = f"{cfg.url} user={cfg.user} project={cfg.project} role={cfg.role}"
        self._durable = offline_dir is not None
        self._outbox: Outbox | None = Outbox(offline_dir) if offline_dir else None
        if self._outbox is None and (default_offline_dir() / "benchlink-outbox.sqlite3").exists():
            self._outbox = Outbox(default_offline_dir())  # an earlier process's queue: send it
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._errors: list[APIError] = []
        self._interval = interval
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._sending = threading.Lock()  # one sender at a time: thread, flush, exit
        self._buffer_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="benchlink-metrics", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def log(
        self,
        run_id: str,
        values: dict[str, float],
        step: int,
        *,
        unit: str | None = None,
        timestamp: Any = None,
    ) -> None:
        stamp = timestamp if timestamp is not None else _times.now()
        points = [point(name, v, step, unit, stamp) for name, v in values.items()]
        if self._outbox is not None and self._durable:
            self._outbox.put(self._scope, run_id, points, None)
            return
        with self._buffer_lock:
            self._buffer.extend((run_id, p) for p in points)
            if len(self._buffer) >= MAX_BATCH:
                self._wake.set()

    def pending(self) -> int:
        """Points not yet taken by the server (in memory and in the local queue)."""
        queued = self._outbox.pending(self._scope) if self._outbox else 0
        return len(self._buffer) + queued

    def rejected(self) -> list[tuple[str, dict[str, Any], str]]:
        """Points the server refused (run id, point, its problem), set aside in the queue."""
        return self._outbox.rejected(self._scope) if self._outbox else []

    def flush(self) -> None:
        """Send what is waiting now (what cannot be sent stays queued); raise the first
        refusal (a 4xx :class:`APIError`) since the last flush."""
        self._send(FLUSH_RETRY)
        if self._errors:
            first, self._errors = self._errors[0], []
            raise first

    def drain(self) -> int:
        """Send the local queue; the number of points the server took."""
        with self._sending:
            return self._drain(None)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self._send(FLUSH_RETRY)
        left = self.pending()
        if left and self._outbox is not None:
            log.warning(
                "%d metric points are queued in %s; the next client of %s sends them",
                left,
                self._outbox.path,
                self._http.config.url,
            )
        atexit.unregister(self.close)

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self._send(None)
            except Exception:  # the thread must live on: the points are kept, try again later
                log.exception("sending metrics failed; retrying later")

    def _send(self, retry: Retry | None) -> None:
        with self._sending:
            self._send_buffer(retry)
            self._drain(retry)

    def _send_buffer(self, retry: Retry | None) -> None:
        with self._buffer_lock:
            taken, self._buffer = self._buffer, []
        batches = list(_batches(taken))
        for i, (run_id, points) in enumerate(batches):
            key = f"benchlink-metrics-{uuid.uuid4()}"
            try:
                self._post(run_id, points, key, retry)
            except UNREACHABLE:
                # This batch may have landed (its answer lost): it keeps its key. The others
                # were never sent; they are keyed when the queue sends them.
                outbox = self._spill_box()
                outbox.put(self._scope, run_id, points, key)
                for other_run, other in batches[i + 1 :]:
                    outbox.put(self._scope, other_run, other, None)
                log.warning("the server is unreachable; metrics queued in %s", outbox.path)
                return
            except APIError as exc:
                self._errors.append(exc)

    def _drain(self, retry: Retry | None) -> int:
        if self._outbox is None:
            return 0
        sent = 0
        while (batch := self._outbox.next_batch(self._scope, MAX_BATCH)) is not None:
            try:
                self._post(batch.run_id, batch.points, batch.key, retry)
            except UNREACHABLE:
                return sent  # still away: the batch keeps its key for the next try
            except APIError as exc:
                self._reject(batch, exc)
                continue
            self._outbox.sent(batch)
            sent += len(batch.points)
        return sent

    def _reject(self, batch: Batch, exc: APIError) -> None:
        assert self._outbox is not None
        self._outbox.reject(self._scope, batch, str(exc))
        self._errors.append(exc)
        log.error("the server refused %d metric points: %s", len(batch.points), exc)

    def _post(
        self, run_id: str, points: list[dict[str, Any]], key: str, retry: Retry | None
    ) -> None:
        self._http.request(
            "POST",
            f"/api/v1/runs/{run_id}/metrics",
            json={"metrics": points},
            idempotency_key=key,
            retry=retry,
        )

    def _spill_box(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(default_offline_dir())
        return self._outbox


def _batches(
    taken: list[tuple[str, dict[str, Any]]],
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Consecutive points of one run, at most MAX_BATCH a batch, in the order logged."""
    run_id: str | None = None
    points: list[dict[str, Any]] = []
    for rid, p in taken:
        if (rid != run_id or len(points) >= MAX_BATCH) and points:
            assert run_id is not None
            yield run_id, points
            points = []
        run_id = rid
        points.append(p)
    if points and run_id is not None:
        yield run_id, points
