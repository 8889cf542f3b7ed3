"""benchlink-edge: run the daemon and operate its buffer.

Every command takes --config (default $BENCHLINK_EDGE_CONFIG or /etc/benchlink/edge.toml) and
--log-level, before or after the command's name; the operator commands open the buffer the
config names, next to a running daemon or without one.

Exit codes: 0 done, 1 a flush/replay left batches queued, 2 a wrong command line, 78 a wrong
configuration (EX_CONFIG: an unreadable or invalid config, a buffer it cannot open, the
metrics port taken) -- the unit does not restart the daemon on 2 or 78, since the same mistake
would fail again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.cli import Parser, add_version
from common.heartbeat import Heartbeat
from edge.buffer import Buffer, ts_text
from edge.cloud_client import CloudClient
from edge.config import ConfigError, EdgeConfig, default_client_id, load_config
from edge.heartbeat import collect, read_state, state_path
from edge.instance import Refused
from edge.metrics import EdgeMetrics
from edge.sync import FlushReport, flush

DEFAULT_CONFIG = "/etc/benchlink/edge.toml"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: sysexits' EX_CONFIG: a configuration error; the unit's RestartPreventExitStatus names it
EXIT_CONFIG = 78


def _buffer(cfg: EdgeConfig) -> Buffer:
    from edge.daemon import open_buffer

    return open_buffer(cfg)


def cmd_run(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    from edge.daemon import Daemon

    async def main() -> None:
        await Daemon(cfg, config_path=Path(args.config)).run()

    try:
        asyncio.run(main())
    except Refused as exc:
        print(f"benchlink-edge: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_status(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    beat = local_heartbeat(cfg)
    buf = _buffer(cfg)
    try:
        alarms = buf.alarm_report()
    finally:
        buf.close()
    if args.json:
        # the heartbeat's document, and the alarms at the edge (not sent: the cloud has its own)
        print(json.dumps({**beat.model_dump(mode="json"), "alarms": alarms}, indent=2))
        return 0
    b = beat.buffer
    print(f"buffer {b.path}: {b.used_bytes} of {b.max_bytes} bytes (when full: {b.full_policy})")
    if b.disk_room_bytes is not None:
        print(f"disk: {b.disk_room_bytes} bytes left for the buffer ({b.min_free_bytes} kept free)")
    if b.full == "disk":
        print(
            "FULL (disk): new readings are refused, the buffer's filesystem is down to the"
            " bytes kept free ([buffer] min_free_bytes); they are taken again once the cloud"
            " takes the backlog or space is freed"
        )
    elif b.full == "budget":
        print(
            "FULL (budget): new readings are refused, unsynced data fills [buffer] max_bytes;"
            " they are taken again once the cloud takes the backlog"
        )
    client_id = cfg.mqtt.client_id or default_client_id(b.id)
    print(f"edge id {b.id}, MQTT client id {client_id}")
    print(f"cloud edge id {beat.edge_id or '- (no [edge] id: no heartbeats)'}")
    if beat.uptime_s is None:
        print("daemon: not running")
    else:
        print(f"daemon: running for {beat.uptime_s:.0f}s, heartbeat every {beat.heartbeat_s:g}s")
    c = beat.clock
    if c is not None:
        print(
            f"clock: the cloud's is {c.offset_ms:+.1f} ms from this PC's"
            f" (+/- {c.uncertainty_ms:.1f} ms, {c.samples} samples;"
            f" warning past {c.max_offset_ms:g} ms)"
        )
    print(f"dead letters: {beat.dead_letters}")
    header = f"{'sensor':36}  {'source':6}  {'state':9}  {'pending':>8}  {'inflight':>8}"
    print(header + f"  {'synced':>9}  {'dead':>6}  {'rate/s':>7}  {'oldest':>8}  last error")
    for sid, st in beat.sensors.items():
        oldest = "-" if st.oldest_waiting_age_s is None else f"{st.oldest_waiting_age_s:.0f}s"
        print(
            f"{sid:36}  {st.source:6}  {st.source_state:9}  {st.pending:>8}  {st.inflight:>8}"
            f"  {st.synced:>9}  {st.dead:>6}  {st.rate_per_s:>7}  {oldest:>8}"
            f"  {st.last_error or '-'}"
        )
    print_alarms(alarms)
    return 0


def print_alarms(report: dict[str, Any]) -> None:
    """The rules cached per sensor, the alarms in force at the edge, the latest cleared."""
    for sid, r in report["rules"].items():
        print(f"alarm rules of {sid}: {r['rules']}, pulled from the cloud at {r['pulled_at']}")
    if not report["rules"]:
        print("alarm rules: none pulled from the cloud yet")
    print(f"alarms in force at the edge: {len(report['in_force'])}")
    for a in report["in_force"]:
        print(
            f"  RAISED  {a['sensor_id']}  {a['kind']:7}  rule {a['rule_id']}"
            f"  value {_value(a['value'])}  at {a['raised_at']}"
        )
    if report["recent"]:
        print("recently cleared:")
    for a in report["recent"]:
        print(
            f"  cleared {a['sensor_id']}  {a['kind']:7}  rule {a['rule_id']}"
            f"  raised {a['raised_at']} ({_value(a['value'])})"
            f"  cleared {a['cleared_at']} ({_value(a['cleared_value'])})"
        )


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def local_heartbeat(cfg: EdgeConfig) -> Heartbeat:
    """What the daemon would send now: the buffer read here, the sources' states, uptime and
    clock from the running daemon's last heartbeat (none when no daemon runs)."""
    live = read_state(state_path(cfg.buffer.path))
    now = datetime.now(UTC)
    buf = _buffer(cfg)
    try:
        beat = collect(
            buf,
            cfg,
            sent_at=now,
            source_states={sid: s.source_state for sid, s in live.sensors.items()} if live else {},
            uptime_s=None
            if live is None or live.uptime_s is None
            else round(live.uptime_s + max(0.0, (now - live.sent_at).total_seconds()), 3),
            clock=live.clock if live else None,
        )
    finally:
        buf.close()
    return beat


def _uuid(text: str) -> str:
    """A run / session / sensor id as the cloud knows it: a UUID, in canonical form."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def cmd_bind(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    buf = _buffer(cfg)
    try:
        buf.bind(args.sensor, args.run_id, args.capture_session_id)
        moved = buf.retry_dead(sensor_id=args.sensor, rebind=True).batches if args.move_dead else 0
    except KeyError:
        print(f"unknown sensor {args.sensor} (is it in the config, and has the daemon run?)")
        return 2
    finally:
        buf.close()
    print(f"{args.sensor} -> run {args.run_id}, capture session {args.capture_session_id}")
    if args.move_dead:
        print(f"{moved} dead batch(es) moved there and queued again (new batch ids)")
    return 0


def _progress_bar(out: Callable[[str], object]) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        out(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} batches")

    return show


def current_tokens(buf: Buffer, cfg: EdgeConfig) -> None:
    """Give the buffer the config's tokens: batches are sent with the token the buffer holds
    for their sensor, and a token rotated in the config must be the one a retry sends."""
    for s in cfg.sensors:
        buf.set_token(str(s.sensor_id), s.token.get_secret_value())


def _send_all(cfg: EdgeConfig) -> FlushReport:
    async def main() -> FlushReport:
        buf = _buffer(cfg)
        try:
            current_tokens(buf, cfg)
            async with CloudClient(cfg.cloud) as client:
                return await flush(
                    buf, client, cfg.sync, EdgeMetrics(), progress=_progress_bar(sys.stderr.write)
                )
        finally:
            buf.close()

    report = asyncio.run(main())
    sys.stderr.write("\n")
    return report


def _print_report(report: FlushReport) -> int:
    if report.total == 0:
        print("synced 0 batch(es): nothing was waiting to be sent")
    else:
        print(f"synced {report.synced} batch(es), dead-lettered {report.dead}, of {report.total}")
    for sid, err in report.failed.items():
        print(f"sensor {sid}: gave up for now: {err}")
    return 1 if report.failed else 0


def cmd_flush(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    return _print_report(_send_all(cfg))


def cmd_dead_letter(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    buf = _buffer(cfg)
    try:
        if args.action == "list":
            rows = buf.dead_letters(args.limit)
            if args.json:
                print(json.dumps(rows, indent=2))
            for r in [] if args.json else rows:
                at = datetime.fromtimestamp(r["at"], UTC).isoformat(timespec="seconds")
                what = r["batch_id"] or r["origin"] or ""
                retried = " (retried)" if r["retried_at"] else ""
                print(f"{r['id']:>6}  {at}  {r['kind']:12}  {what}  {r['reason']}{retried}")
            return 0
        current_tokens(buf, cfg)
        n = buf.retry_dead(args.ids or None, sensor_id=args.sensor, rebind=args.rebind)
        if args.rebind:
            print(
                f"{n.batches} batch(es) moved to their sensor's current binding, queued (new ids)"
            )
        else:
            print(f"{n.batches} batch(es) queued again (same batch ids)")
        if n.episodes:
            print(f"{n.episodes} device-fault episode(s) queued again (same episode ids)")
        return 0
    finally:
        buf.close()


def _when(text: str) -> str:
    example = "e.g. 2026-01-01T10:00:00Z"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time; {example}") from None
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a zone, {example}")
    return ts_text(ts)


def _log_level(text: str) -> str:
    level = text.lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level; use one of {', '.join(LOG_LEVELS)}"
        )
    return level


def cmd_replay(cfg: EdgeConfig, args: argparse.Namespace) -> int:
    buf = _buffer(cfg)
    try:
        n = buf.requeue_range(args.since, args.until, args.sensor)
    finally:
        buf.close()
    print(f"{n} synced batch(es) overlap the range; re-sending with their original ids")
    return _print_report(_send_all(cfg))


def _common(*, defaults: bool) -> Parser:
    """--config and --log-level, for the top level (with the defaults) and for every command
    (without: a value given before the command must not be reset by the command's parser)."""
    p = Parser(add_help=False)
    p.add_argument(
        "--config",
        default=os.environ.get("BENCHLINK_EDGE_CONFIG", DEFAULT_CONFIG)
        if defaults
        else argparse.SUPPRESS,
        metavar="FILE",
        help=f"edge TOML config (default: $BENCHLINK_EDGE_CONFIG or {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--log-level",
        type=_log_level,
        default=os.environ.get("BENCHLINK_EDGE_LOG_LEVEL", "info")
        if defaults
        else argparse.SUPPRESS,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default: $BENCHLINK_EDGE_LOG_LEVEL or info)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = Parser(
        prog="benchlink-edge",
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(defaults=True)],
    )
    add_version(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[_common(defaults=False)])

    command("run", "run the daemon").set_defaults(fn=cmd_run)
    st = command(
        "status",
        "the state the daemon reports in its heartbeat: buffer, clock, and per sensor"
        " source state, pending, in flight, synced, dead-letter, rate, oldest waiting",
    )
    st.add_argument(
        "--json", action="store_true", help="print the heartbeat's JSON document instead"
    )
    st.set_defaults(fn=cmd_status)
    b = command("bind", "move a sensor to another run / capture session")
    b.add_argument("sensor", type=_uuid, help="the sensor's id (a UUID)")
    b.add_argument("--run-id", required=True, type=_uuid, help="the run to record into")
    b.add_argument(
        "--capture-session-id",
        required=True,
        type=_uuid,
        help="the capture session (of that run) to record into",
    )
    b.add_argument(
        "--move-dead",
        action="store_true",
        help="also move the sensor's dead-lettered batches to this run/session and retry them",
    )
    b.set_defaults(fn=cmd_bind)
    command("flush", "seal and sync everything now").set_defaults(fn=cmd_flush)
    dl = command("dead-letter", "list or retry dead-lettered items")
    dl.add_argument("action", choices=["list", "retry"], help="list them, or queue batches again")
    dl.add_argument("ids", nargs="*", type=int, help="retry: dead-letter ids (default: all)")
    dl.add_argument("--limit", type=int, default=100, help="list: at most this many (100)")
    dl.add_argument("--sensor", type=_uuid, help="retry: only this sensor's dead batches")
    dl.add_argument(
        "--rebind",
        action="store_true",
        help="retry: move the batches to their sensor's current run/session (new batch ids)",
    )
    dl.add_argument("--json", action="store_true", help="list: print JSON")
    dl.set_defaults(fn=cmd_dead_letter)
    r = command("replay", "re-send the synced batches of a time range")
    r.add_argument("--since", required=True, type=_when, help="start, ISO 8601 with a zone")
    r.add_argument("--until", required=True, type=_when, help="end, ISO 8601 with a zone")
    r.add_argument("--sensor", type=_uuid, help="only this sensor's batches")
    r.set_defaults(fn=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.Formatter.converter = time.gmtime
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        print(f"benchlink-edge: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from edge.daemon import StartupError

    try:
        return int(args.fn(cfg, args))
    except StartupError as exc:
        print(f"benchlink-edge: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
