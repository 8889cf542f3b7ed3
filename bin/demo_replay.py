#!/usr/bin/env python3
"""The demo's fallback: refill a run with recorded or generated telemetry, and its metrics.

Readings come from a CSV file (``--from-csv``: at least the columns ``timestamp,raw_value``,
which is what ``GET /api/v1/telemetry/export.csv`` produces) or are generated
(``--generate --duration N``, the same signal as bin/demo_sensor.py). They go into

* ``--capture-session-id``: an existing session, which takes readings from its start on (up
  to now while it runs; to its stop, as late data, once it ended): generated readings are
  placed inside it (ending now, or at its stop), CSV readings outside it are reported and
  skipped, or
* ``--new-session``: a new capture session of the run (the next ordinal) that started with
  the data (the CSV's first reading, or ``--duration`` seconds ago), stopped again afterwards
  with ``--stop``.

``--metrics N`` also logs a ``loss`` curve of N steps and reads it back.

python bin/demo_replay.py --owner-user-id $OWNER --project-id $PROJECT --sensor-id $SENSOR \\
    --token $TOKEN --run-id $RUN --new-session --generate --duration 60 --metrics 20 --stop
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from demo_seed import Api, ApiError
from demo_sensor import DEFAULT_BASE_URL, add_signal_arguments, signal_from
from demo_signal import Signal, generate
from demo_telemetry import TelemetryClient, TelemetryRejected, chunks

from common.cli import add_version, plain


def parse_time(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {value!r}")
    return ts


def read_csv(path: Path) -> Iterator[dict[str, Any]]:
    """Readings from a CSV with ``timestamp`` and ``raw_value`` columns (others ignored)."""
    with path.open(newline="") as f:
        rows = csv.DictReader(f)
        missing = {"timestamp", "raw_value"} - set(rows.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for step, row in enumerate(rows, start=1):
            yield {
                "timestamp": parse_time(row["timestamp"]).isoformat(),
                "raw_value": float(row["raw_value"]),
                "meta": {"step": step, "replayed_from": path.name},
            }


@dataclass
class Window:
    """Where readings may go: from the session's start to now while it runs, to its stop once
    it ended (the cloud refuses anything else)."""

    start: datetime
    stop: datetime | None

    def end(self) -> datetime:
        return self.stop or datetime.now(UTC)

    def holds(self, ts: datetime) -> bool:
        return self.start <= ts <= self.end()


def session_window(session: dict[str, Any]) -> Window:
    start = parse_time(session["started_at"])
    stop = parse_time(session["stopped_at"]) if session.get("stopped_at") else None
    return Window(start, None if session["status"] == "running" else stop)


def open_session(
    api: Api, run_id: str, session_id: str | None, started_at: datetime | None = None
) -> dict[str, Any]:
    """The session named, or a new running one that started at ``started_at`` (its data's
    first reading: the cloud takes no reading from before a session's start)."""
    base = f"/api/v1/runs/{run_id}/capture-sessions"
    if session_id:
        found: dict[str, Any] = api.get(f"{base}/{session_id}")
        return found
    ordinal = max((s["ordinal_number"] for s in api.items(base)), default=0) + 1
    body: dict[str, Any] = {"ordinal_number": ordinal, "status": "running"}
    if started_at is not None:
        body["started_at"] = min(started_at, datetime.now(UTC)).isoformat()
    created: dict[str, Any] = api.post(base, body)
    return created


def generated_readings(
    signal: Signal, window: Window, duration_s: float, rate_hz: float
) -> Iterator[dict[str, Any]]:
    """Up to ``duration_s`` seconds of readings inside the window, ending at its end (now for
    a running session: captured data), starting no earlier than its start."""
    end = window.end()
    start = max(window.start, end - timedelta(seconds=duration_s))
    return generate(signal, start, (end - start).total_seconds(), rate_hz)


def loss_curve(steps: int, *, seed: int | None = None) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [
        {
            "name": "loss",
            "step": step,
            "value": round(0.9 * math.exp(-step / 8) + 0.05 + rng.uniform(0, 0.02), 4),
            "timestamp": (now + timedelta(seconds=step)).isoformat(),
        }
        for step in range(1, steps + 1)
    ]


def log_metrics(api: Api, run_id: str, steps: int) -> list[dict[str, Any]]:
    """Log a loss curve and read it back (the points in step order)."""
    api.post(f"/api/v1/runs/{run_id}/metrics", {"metrics": loss_curve(steps)})
    points: list[dict[str, Any]] = api.get(f"/api/v1/runs/{run_id}/metrics", name="loss")["points"]
    return points


def replay(args: argparse.Namespace) -> dict[str, Any]:
    api = Api(args.base_url, args.owner_user_id, args.project_id)
    try:
        rows = list(read_csv(args.from_csv)) if args.from_csv else []
        if rows:
            began = min(parse_time(r["timestamp"]) for r in rows)
        else:
            began = datetime.now(UTC) - timedelta(seconds=args.duration)
        session = open_session(api, args.run_id, args.capture_session_id, began)
        window = session_window(session)
        if args.from_csv:
            readings = [r for r in rows if window.holds(parse_time(r["timestamp"]))]
            skipped = len(rows) - len(readings)
        else:
            rate = args.rate or 10.0
            readings = list(generated_readings(signal_from(args), window, args.duration, rate))
            skipped = 0
        client = TelemetryClient(
            args.base_url, args.token, args.sensor_id, args.run_id, session["id"]
        )
        try:
            for batch in chunks(iter(readings), args.batch_size):
                client.send(batch)
        finally:
            client.close()
        result: dict[str, Any] = {
            "capture_session_id": session["id"],
            "skipped_outside_window": skipped,
            **client.stats.summary(),
        }
        if args.stop and session["status"] == "running":
            path = f"/api/v1/runs/{args.run_id}/capture-sessions/{session['id']}/stop"
            result["session_status"] = api.post(path, {"status": "succeeded"})["status"]
        if args.metrics:
            result["metrics_read_back"] = len(log_metrics(api, args.run_id, args.metrics))
        return result
    finally:
        api.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(p)
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="the cloud (%(default)s)")
    p.add_argument("--owner-user-id", default=os.environ.get("OWNER"), help="default: $OWNER")
    p.add_argument("--project-id", default=os.environ.get("PROJECT"), help="default: $PROJECT")
    p.add_argument("--sensor-id", required=True, help="the sensor the readings are from")
    p.add_argument("--token", required=True, help="that sensor's token")
    p.add_argument("--run-id", required=True, help="the run to record into")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--capture-session-id", help="into this capture session of the run")
    target.add_argument(
        "--new-session", action="store_true", help="into a new capture session of the run"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-csv", type=Path, help="readings from this CSV (timestamp,raw_value columns)"
    )
    source.add_argument("--generate", action="store_true", help="generate the readings")
    p.add_argument("--duration", type=float, default=60.0, help="--generate: seconds of data")
    p.add_argument("--rate", type=float, default=None, help="--generate: Hz (default 10)")
    p.add_argument(
        "--batch-size", type=int, default=5000, help="readings per request (%(default)s)"
    )
    p.add_argument("--stop", action="store_true", help="stop a running session afterwards")
    p.add_argument("--metrics", type=int, default=0, help="log this many `loss` steps")
    add_signal_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not (args.owner_user_id and args.project_id):
        print("demo_replay: --owner-user-id and --project-id are required", file=sys.stderr)
        return 2
    try:
        result = replay(args)
    except (ApiError, TelemetryRejected, RuntimeError, ValueError, httpx.HTTPError) as exc:
        print(f"demo_replay: {exc}", file=sys.stderr)
        return 1
    if result["duplicate"]:
        print(duplicates_note(result["duplicate"], result["sent"]), file=sys.stderr)
    print(json.dumps(result))
    return 0


def duplicates_note(duplicate: int, sent: int) -> str:
    """Why readings sent were not stored: the sensor already had them (a sensor has one
    reading per timestamp), e.g. a CSV replayed under the sensor it was exported from."""
    return (
        f"demo_replay: {duplicate} of {sent} readings were already stored for this sensor "
        "(same timestamp and raw value) and were dropped as duplicates; a sensor has one "
        "reading per timestamp: replay them under another sensor (--sensor-id, --token)"
    )


if __name__ == "__main__":
    sys.exit(main())
