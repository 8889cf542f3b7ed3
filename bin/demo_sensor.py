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
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from demo_seed import add_owner_options
from demo_signal import PROFILES, Signal
from demo_telemetry import (
    Stats,
    TelemetryClient,
    TelemetryRejected,
    problem_detail,
    run_batch,
    run_stream,
)

from common.cli import add_version, plain
from common.wire import MAX_READINGS_PER_BATCH

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE_URL = os.environ.get("BASE", "http://localhost:8002")


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
        raise TelemetryRejected(r.status_code, problem_detail(r))
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
        raise TelemetryRejected(r.status_code, problem_detail(r))
    session = r.json()
    if not session.get("started_at"):
        raise RuntimeError(f"capture session {args.capture_session_id} has not started")
    start = datetime.fromisoformat(session["started_at"])
    stop = session.get("stopped_at")
    return start, datetime.fromisoformat(stop) if stop else datetime.now(UTC)


def _batch_size(args: argparse.Namespace, rate: float) -> int:
    default_size = max(1, int(rate // 2)) if args.mode == "stream" else 5000
    return int(min(args.batch_size or default_size, MAX_READINGS_PER_BATCH))


def _send_captured(
    args: argparse.Namespace, client: TelemetryClient, owner: str, rate: float, batch_size: int
) -> Stats:
    """Batch mode: up to ``--duration`` seconds of data, inside the capture session."""
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
    return run_batch(
        client,
        signal_from(args),
        duration_s=span,
        rate_hz=rate,
        batch_size=batch_size,
        start=begin,
    )


def _print_summary(args: argparse.Namespace, stats: Stats) -> None:
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
    batch_size = _batch_size(args, rate)
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
            stats = _send_captured(args, client, owner, rate, batch_size)
    except KeyboardInterrupt:
        stats = client.stats
    except (TelemetryRejected, RuntimeError, httpx.HTTPError) as exc:
        print(f"demo_sensor: {exc}", file=sys.stderr)
        print(json.dumps(client.stats.summary()), file=sys.stderr)
        return 1
    finally:
        client.close()
    _print_summary(args, stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
