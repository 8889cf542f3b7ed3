#!/usr/bin/env python3
"""A demo sensor: a realistic thermocouple signal posted to ``POST /api/v1/telemetry``.

Each request is exactly the scenario's::

    curl -X POST $BASE/api/v1/telemetry -H "Authorization: Bearer <token>" \\
      -d '{"sensor_id": ..., "run_id": ..., "capture_session_id": ...,
           "readings": [{"timestamp": "...Z", "raw_value": 1.23, "meta": {"step": 1}}]}'

plus an ``Idempotency-Key`` per batch, so a batch retried after a timeout or a 5xx is
stored once.

``--mode stream`` samples in real time (``--rate`` Hz) and sends small batches as it goes;
``--mode batch`` generates up to ``--duration`` seconds of already-captured data and sends it
in large batches. The cloud takes no reading from before its capture session started, so the
data ends now (or at the session's stop) and starts no earlier than the session: batch mode
reads the session with the owner's identity (``--owner-user-id``, ``$OWNER`` or the id
bin/demo_seed.py saved in ``var/demo_owner``; the project is found, or ``--project-id``) and
says when it sends less than asked.

With ``--thermocouple-type K`` the raw value is the thermocouple emf in mV (NIST ITS-90, cold
junction ``--cold-junction-c``), for a sensor on the ``thermocouple`` conversion profile;
without it the raw value is a plain number ``(T - offset) / scale`` that a ``linear`` profile
{a: scale, b: offset} turns back into °C.

python bin/demo_sensor.py --sensor-id S --token T --run-id R --capture-session-id C \\
    --mode stream --duration 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from demo_seed import add_owner_options

from common.cli import add_version, plain
from common.wire import MAX_READINGS_PER_BATCH, TELEMETRY_PATH
from edge.backoff import Backoff, parse_retry_after
from hardware.thermocouple import emf_mv

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE_URL = os.environ.get("BASE", "http://localhost:8002")
#: statuses worth another try: the server or a proxy is struggling, or the same key is in flight
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


# --- the signal ---------------------------------------------------------------------------


def heat_profile(t: float, *, ambient_c: float = 25.0, setpoint_c: float = 420.0) -> float:
    """A furnace heating up under a PID controller: an underdamped second-order step
    (damping 0.7, so ~4.6 % overshoot near t = 88 s, settled after about two minutes)."""
    zeta, omega = 0.7, 0.05
    damped = omega * math.sqrt(1 - zeta**2)
    envelope = math.exp(-zeta * omega * t)
    shape = math.cos(damped * t) + zeta / math.sqrt(1 - zeta**2) * math.sin(damped * t)
    return ambient_c + (setpoint_c - ambient_c) * (1.0 - envelope * shape)


def cycle_profile(t: float, *, low_c: float = 120.0, high_c: float = 320.0) -> float:
    """Thermal cycling: a slow sine between two plateaus (period two minutes)."""
    mid, amp = (high_c + low_c) / 2, (high_c - low_c) / 2
    return mid + amp * math.sin(2 * math.pi * t / 120.0)


PROFILES: dict[str, Callable[[float], float]] = {"heat": heat_profile, "cycle": cycle_profile}


@dataclass
class Signal:
    """Temperature over time turned into what the sensor reports, with measurement noise."""

    profile: str = "heat"
    thermocouple_type: str | None = None
    cold_junction_c: float = 24.5
    scale: float = 1.0
    offset: float = 0.0
    noise_c: float = 0.4
    rng: random.Random = field(default_factory=random.Random)

    def temperature(self, t: float) -> float:
        return PROFILES[self.profile](t) + self.rng.gauss(0.0, self.noise_c)

    def raw(self, t: float) -> float:
        temp = self.temperature(t)
        if self.thermocouple_type:
            # What a voltmeter across the thermocouple reads: hot junction against the cold one.
            tc = self.thermocouple_type
            return round(emf_mv(tc, temp) - emf_mv(tc, self.cold_junction_c), 5)
        return round((temp - self.offset) / self.scale, 4)

    def meta(self, step: int) -> dict[str, Any]:
        if self.thermocouple_type:
            return {"step": step, "cold_junction_c": self.cold_junction_c}
        return {"step": step}


def reading(signal: Signal, at: datetime, t: float, step: int) -> dict[str, Any]:
    return {
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "raw_value": signal.raw(t),
        "meta": signal.meta(step),
    }


def generate(
    signal: Signal, start: datetime, duration_s: float, rate_hz: float, first_step: int = 1
) -> Iterator[dict[str, Any]]:
    """``duration_s`` seconds of readings at ``rate_hz`` from ``start`` (already captured)."""
    count = max(1, int(duration_s * rate_hz))
    for i in range(count):
        t = i / rate_hz
        yield reading(signal, start + timedelta(seconds=t), t, first_step + i)


# --- the client ---------------------------------------------------------------------------


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


def _problem_detail(response: httpx.Response) -> str:
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
                error = f"HTTP {response.status_code}: {_problem_detail(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise TelemetryRejected(response.status_code, _problem_detail(response))
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


# --- command line -------------------------------------------------------------------------


def add_signal_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile", choices=sorted(PROFILES), default="heat", help="temperature course (heat)"
    )
    p.add_argument(
        "--thermocouple-type",
        default=None,
        help="send the emf in mV of this type (K, J, T, ...) for a sensor on the thermocouple "
        "profile; without it, send plain numbers for a linear profile",
    )
    p.add_argument(
        "--cold-junction-c",
        type=float,
        default=24.5,
        help="--thermocouple-type: cold junction temperature, °C (%(default)s)",
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="plain numbers: raw = (T - offset) / scale"
    )
    p.add_argument(
        "--offset", type=float, default=0.0, help="plain numbers: see --scale (%(default)s)"
    )
    p.add_argument("--seed", type=int, default=None, help="noise seed (reproducible signal)")


def signal_from(args: argparse.Namespace) -> Signal:
    return Signal(
        profile=args.profile,
        thermocouple_type=args.thermocouple_type,
        cold_junction_c=args.cold_junction_c,
        scale=args.scale,
        offset=args.offset,
        rng=random.Random(args.seed),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(p)
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="default: $BASE or %(default)s")
    p.add_argument("--sensor-id", required=True, help="the sensor to post as")
    p.add_argument("--token", required=True, help="the sensor's token (or set it in $TOKEN)")
    p.add_argument("--run-id", required=True, help="the run to record into")
    p.add_argument("--capture-session-id", required=True, help="the capture session of the run")
    p.add_argument(
        "--mode",
        choices=("stream", "batch"),
        default="stream",
        help="real time, or already-captured data in large batches (stream)",
    )
    add_owner_options(
        p,
        default=os.environ.get("OWNER"),
        help="batch: who reads the session's start (default: $OWNER, else --owner-file)",
    )
    p.add_argument(
        "--project-id",
        default=os.environ.get("PROJECT"),
        help="batch: default $PROJECT, else the owner's project that holds the session",
    )
    p.add_argument("--duration", type=float, default=30.0, help="seconds (stream: 0 = forever)")
    p.add_argument("--rate", type=float, default=None, help="Hz (stream 10, batch 100)")
    p.add_argument("--batch-size", type=int, default=None, help="readings per request")
    p.add_argument("--max-retries", type=int, default=8, help="attempts per batch (%(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_signal_arguments(p)
    return p


def _owner(args: argparse.Namespace) -> str | None:
    if args.owner_user_id:
        return str(args.owner_user_id)
    try:
        return args.owner_file.read_text().strip() or None
    except OSError:
        return None


def _projects(args: argparse.Namespace, owner: str) -> list[str]:
    """The project to read the session in: the one given, else each of the owner's."""
    if args.project_id:
        return [str(args.project_id)]
    url = f"{args.base_url.rstrip('/')}/api/v1/projects"
    r = httpx.get(url, params={"limit": 500}, headers={"X-User-Id": owner}, timeout=30.0)
    if r.status_code != 200:
        raise TelemetryRejected(r.status_code, _problem_detail(r))
    return [str(p["id"]) for p in r.json()["items"]]


def session_span(args: argparse.Namespace, owner: str) -> tuple[datetime, datetime]:
    """When the capture session started, and when it ended (now while it runs)."""
    url = f"{args.base_url.rstrip('/')}/api/v1/runs/{args.run_id}/capture-sessions/"
    r = None
    for project in _projects(args, owner):
        headers = {"X-User-Id": owner, "X-Project-Id": project, "X-Project-Role": "owner"}
        r = httpx.get(url + args.capture_session_id, headers=headers, timeout=30.0)
        if r.status_code != 404:
            break
    if r is None:
        raise RuntimeError(f"the owner {owner} has no project; run bin/demo_seed.py first")
    if r.status_code != 200:
        raise TelemetryRejected(r.status_code, _problem_detail(r))
    session = r.json()
    if not session.get("started_at"):
        raise RuntimeError(f"capture session {args.capture_session_id} has not started")
    start = datetime.fromisoformat(session["started_at"])
    stop = session.get("stopped_at")
    return start, datetime.fromisoformat(stop) if stop else datetime.now(UTC)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    owner = _owner(args)
    if args.mode == "batch" and owner is None:
        print(
            "demo_sensor: --mode batch places its data inside the capture session and reads"
            f" when it started, as the project's owner: run bin/demo_seed.py (it saves the"
            f" owner in {args.owner_file}) or pass --owner-user-id (or set $OWNER)",
            file=sys.stderr,
        )
        return 2
    rate = args.rate or (10.0 if args.mode == "stream" else 100.0)
    default_size = max(1, int(rate // 2)) if args.mode == "stream" else 5000
    batch_size = min(args.batch_size or default_size, MAX_READINGS_PER_BATCH)
    client = TelemetryClient(
        args.base_url,
        args.token,
        args.sensor_id,
        args.run_id,
        args.capture_session_id,
        max_retries=args.max_retries,
    )
    try:
        if args.mode == "stream":
            stats = run_stream(
                client,
                signal_from(args),
                duration_s=args.duration,
                rate_hz=rate,
                batch_size=batch_size,
            )
        else:
            assert owner is not None  # checked above
            start, end = session_span(args, owner)
            begin = max(start, end - timedelta(seconds=args.duration))
            span = (end - begin).total_seconds()
            if span < args.duration:
                print(
                    f"demo_sensor: the capture session holds {span:.0f} s before"
                    f" {end.isoformat()}: sending {span:.0f} s of captured data, not"
                    f" {args.duration:g}",
                    file=sys.stderr,
                )
            stats = run_batch(
                client,
                signal_from(args),
                duration_s=span,
                rate_hz=rate,
                batch_size=batch_size,
                start=begin,
            )
    except KeyboardInterrupt:
        stats = client.stats
    except (TelemetryRejected, RuntimeError, httpx.HTTPError) as exc:
        print(f"demo_sensor: {exc}", file=sys.stderr)
        print(json.dumps(client.stats.summary()), file=sys.stderr)
        return 1
    finally:
        client.close()
    summary = {"mode": args.mode, **stats.summary()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            "sent {sent} readings in {batches} batches: accepted {accepted}, late {late}, "
            "duplicate {duplicate}, retries {retries}, {rate_per_s}/s over {duration_s} s".format(
                **summary
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
