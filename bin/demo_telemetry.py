"""The demo sensor's client: batches of readings posted to ``POST /api/v1/telemetry`` with an
``Idempotency-Key`` per batch (a batch retried after a timeout or a 5xx is stored once), and
the two ways of sending them: in real time, or already-captured data in large batches."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from demo_signal import Signal, generate, reading

from common.wire import TELEMETRY_PATH
from edge.backoff import Backoff, parse_retry_after

#: statuses worth another try: the server or a proxy is struggling, or the same key is in flight
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class TelemetryRejected(RuntimeError):
    """The cloud refused a batch for good (4xx other than the retryable ones)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class Stats:
    batches: int = 0
    sent: int = 0
    accepted: int = 0
    late: int = 0
    #: Copies of readings the sensor already had (same timestamp and raw value): dropped.
    duplicate: int = 0
    retries: int = 0
    replayed: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "batches": self.batches,
            "sent": self.sent,
            "accepted": self.accepted,
            "late": self.late,
            "duplicate": self.duplicate,
            "retries": self.retries,
            "replayed": self.replayed,
            "duration_s": round(elapsed, 2),
            "rate_per_s": round(self.sent / elapsed, 1),
        }


def problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)


@dataclass
class TelemetryClient:
    """Posts batches for one sensor / run / capture session, retrying what is worth retrying."""

    base_url: str
    token: str
    sensor_id: str
    run_id: str
    capture_session_id: str
    max_retries: int = 8
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 8.0
    stats: Stats = field(default_factory=Stats)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30.0))

    def close(self) -> None:
        self.http.close()

    def body(self, readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "sensor_id": self.sensor_id,
            "run_id": self.run_id,
            "capture_session_id": self.capture_session_id,
            "readings": list(readings),
        }

    def send(self, readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Send one batch (one Idempotency-Key for all its attempts); the 202 body."""
        key = f"demo-sensor-{uuid.uuid4()}"
        content = json.dumps(self.body(readings))
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        }
        url = self.base_url.rstrip("/") + TELEMETRY_PATH
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            try:
                response = self.http.post(url, content=content, headers=headers)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 202:
                    return self._count(response, len(readings))
                error = f"HTTP {response.status_code}: {problem_detail(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise TelemetryRejected(response.status_code, problem_detail(response))
            if attempt == self.max_retries:
                raise RuntimeError(f"gave up after {attempt + 1} attempts: {error}")
            self.stats.retries += 1
            time.sleep(self._delay(backoff, response))
        raise AssertionError("unreachable")

    def _delay(self, backoff: Backoff, response: httpx.Response | None) -> float:
        hinted = parse_retry_after(response.headers.get("retry-after") if response else None)
        if hinted is not None:
            return min(hinted, self.backoff_max_s)
        return backoff.next()

    def _count(self, response: httpx.Response, n: int) -> dict[str, Any]:
        body: dict[str, Any] = response.json()
        self.stats.batches += 1
        self.stats.sent += n
        self.stats.accepted += int(body["accepted"])
        self.stats.late += int(body["late"])
        self.stats.duplicate += int(body.get("duplicate", 0))
        if response.headers.get("idempotent-replayed") == "true":
            self.stats.replayed += 1
        return body


def chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- modes --------------------------------------------------------------------------------


def run_batch(
    client: TelemetryClient,
    signal: Signal,
    *,
    duration_s: float,
    rate_hz: float,
    batch_size: int,
    start: datetime | None = None,
) -> Stats:
    """Send ``duration_s`` seconds of captured data, ending now unless ``start`` is given
    (the caller keeps it inside the capture session)."""
    begin = start or datetime.now(UTC) - timedelta(seconds=duration_s)
    for batch in chunks(generate(signal, begin, duration_s, rate_hz), batch_size):
        client.send(batch)
    return client.stats


def run_stream(
    client: TelemetryClient,
    signal: Signal,
    *,
    duration_s: float,
    rate_hz: float,
    batch_size: int,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[dict[str, Any]], None] | None = None,
) -> Stats:
    """Sample in real time for ``duration_s`` seconds (0: until stopped), sending as it goes."""
    t0 = time.monotonic()
    pending: list[dict[str, Any]] = []
    step = 0
    while not should_stop():
        elapsed = time.monotonic() - t0
        if duration_s and elapsed >= duration_s:
            break
        step += 1
        pending.append(reading(signal, datetime.now(UTC), elapsed, step))
        if len(pending) >= batch_size:
            answer = client.send(pending)
            pending = []
            if on_batch:
                on_batch(answer)
        next_tick = t0 + step / rate_hz
        time.sleep(max(0.0, next_tick - time.monotonic()))
    if pending:
        client.send(pending)
    return client.stats
