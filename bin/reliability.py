#!/usr/bin/env python3
"""Run the reliability suite in its long form and write docs/reliability.md from what it did.

    make reliability                                  # a new seed
    BENCHLINK_RELIABILITY_SEED=123 make reliability   # replay a run
    .venv/bin/python bin/reliability.py --short       # the slice `make test` runs

Services are required (BENCHLINK_REQUIRE_SERVICES=1): a section that cannot run fails the run
instead of vanishing from the report. The page is written only when every test passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.cli import Parser, add_version, plain  # noqa: E402

#: Sections whose tests live with their area (they run in `make test` as they are); the long
#: run runs them too, so the page states what this run proved, with their pass counts.
ALSO_RUN = ("tests/edge/test_disk_full.py", "tests/cloud/test_access.py")

GUARANTEES = [
    (
        "Every reading the edge committed is stored in the cloud exactly once",
        "connections cut mid-request, answers lost after the cloud committed (reset), delays"
        " past the edge's timeout, a blackhole, a bandwidth limit, kept-alive connections reset",
        "serial capture from the simulator through the real daemon and a fault proxy; the"
        " buffer's readings against the cloud database's rows, (timestamp, value) by"
        " (timestamp, value)",
    ),
    (
        "A reading acknowledged by the edge's writer survives kill -9; the buffer reopens as"
        " the same file; a group commit is all or nothing",
        "kill -9 at a random SQLite VM step inside a commit, or at a random time (also inside"
        " fsync)",
        "the same inode reopened, `PRAGMA integrity_check`, readings 0..M each once, M at"
        " least the last acknowledged and at a write's end",
    ),
    (
        "A 2xx from the cloud means the batch is committed; retries with the same"
        " Idempotency-Key store it once; no 500",
        "kill -9 of the whole service (1 and 2 workers), of one of two workers,"
        " pg_terminate_backend of its PostgreSQL connections, kill -9 and restarts of a"
        " private PostgreSQL cluster",
        "4 senders retrying each batch until a 2xx and never after; the database's rows"
        " against everything that got a 2xx",
    ),
    (
        "Lines read from a serial port but not committed at kill -9 stay within the group"
        " commit's window",
        "kill -9 of the daemon during capture at 200 lines/s",
        "lines written by the device minus lines left unread in the pty minus lines committed",
    ),
    (
        "Every MQTT message the broker acknowledged to the device is stored in the cloud"
        " exactly once through kill -9 of the edge; messages the broker had not delivered yet"
        " (queued for the daemon's persistent session while it was down, or past its in-flight"
        " window) are delivered after its restart and stored once",
        "kill -9 of the daemon at random moments (taking a backlog, between a commit and its"
        " PUBACK, inside a sync), down up to 1.5 s while the device publishes on at QoS 1",
        "bare numbers and device-timestamped readings from a private Mosquitto with"
        " persistence through the real daemon to the real cloud; the cloud database's rows"
        " value by value against every publish the broker acknowledged",
    ),
    (
        "An MQTT reading the broker acknowledged is stored in the edge's buffer exactly once"
        " across Mosquitto restarts (after a crash: readings carrying their own timestamp)",
        "Mosquitto stopped with SIGTERM, or killed with kill -9 after a save (it comes back"
        " with that save's state), with part of a published chunk taken by the daemon",
        "the real daemon capturing from a private Mosquitto with persistence; every published"
        " value counted in the buffer",
    ),
    (
        "A full filesystem under the buffer: MQTT messages stay unacknowledged at the broker,"
        " serial lines are dropped and counted, nothing committed is lost, capture resumes"
        " when space returns",
        "the buffer on a 32 MiB tmpfs filled by another file, during capture and sync",
        "`tests/edge/test_disk_full.py` (run by this suite): readings counted at every step,"
        " the refusals in the metrics and the log",
    ),
    (
        "Every endpoint keeps its OpenAPI contract: no 5xx, every answer as documented,"
        " invalid input refused with a 4xx",
        "bodies, query strings, path ids and headers schemathesis generates, valid and"
        " invalid, with a member's identity headers and a sensor's token, on SQLite and"
        " PostgreSQL",
        "every schemathesis check but 'valid data accepted' (a cursor or an id the document"
        " cannot describe) on every operation",
    ),
    (
        "No read or write across projects; a foreign id is 404; a refused write leaves"
        " nothing behind",
        "every route called with no identity, from another project, as viewer, editor and"
        " owner; malformed identity headers; the gateway secret missing or wrong; a sensor"
        " token used for another sensor or another project",
        "`tests/cloud/test_access.py` (run by this suite): a rule declared for every route"
        " (an undeclared route fails), the event journal unchanged after a refused write",
    ),
    (
        "Under steady load memory and latency stay flat, with no error and exact counts",
        "10 minutes: 50 sensors at 4 readings/s each through 2 edges (MQTT), 5 live viewers"
        " (3 WebSocket, 2 SSE), a chart query every 0.5 s; the cloud on a private PostgreSQL"
        " cluster with 2 workers",
        "RSS of every process from /proc and p99 latencies per 30 s window, least-squares"
        " slopes after a 2-minute warm-up (the live rings fill; bounds: 2 MB/min, and a"
        " tenth of the median p99 per minute); the database's rows"
        " and every viewer's readings against every publish the broker acknowledged",
    ),
    (
        "User text in the portal is shown as text, never run; no inline script runs",
        '`<script>`, `"><img onerror=…>`, `javascript:` URLs, `<svg onload>` in names, tags,'
        " descriptions, run names and params; markup injected into the page by hand",
        "real Chromium: no script ran, no request left for another origin, the"
        " Content-Security-Policy refused the inline script",
    ),
]

NOT_PROMISED = [
    "A disk or controller that acknowledges an fsync it did not do: kill -9 tests a crash of"
    " the process, not of the machine; durability across a power cut rests on SQLite's WAL"
    " with `synchronous = FULL` and on the disk telling the truth.",
    "Serial lines inside the loss window above: a serial device cannot re-send, so lines"
    " read but not committed when the daemon dies are lost (the window is measured, not zero).",
    "That readings the cloud refuses for good (before their capture session, a revoked"
    " token) reach it: they are dead-lettered at the edge, counted and listed by"
    " `benchlink-edge dead-letter list`.",
    "Bare-number MQTT payloads (no timestamp of their own) across a Mosquitto crash: those"
    " the broker had queued at its last save and sends again without DUP are stored again"
    " (never dropped: the same value twice may be two readings); counted as"
    " `stored_twice_not_promised`. A broker crash also loses what devices published after"
    " its last save (docs/edge.md).",
    "MQTT messages a broker drops before the daemon takes them: a broker without"
    " persistence restarted, a session expired (`mqtt.session_expiry_s`), a queue limit"
    " (`max_queued_messages`; Debian's default of 1000 drops QoS 1 messages), or publishes"
    " the broker never acknowledged to the device (the device's to send again).",
    "TLS: the suite talks plain HTTP and MQTT over loopback; a TLS-terminating proxy or"
    " Mosquitto's TLS listener is not exercised by it.",
    "Flatness beyond the soak: its slopes are measured over 8 minutes at 200 readings/s; a"
    " leak slower than the bound (2 MB/min), or one that shows only at other rates or after"
    " hours, would pass. PostgreSQL's own processes are not sampled.",
]


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    for r in records:
        faults.update(r.get("faults", {}))
    return {
        "faults": dict(sorted(faults.items())),
        "readings": sum(int(r.get("readings", 0)) for r in records),
        "lost": sum(int(r.get("lost", 0)) for r in records),
        "doubled": sum(int(r.get("doubled", 0)) for r in records),
        "http_5xx": sum(int(r.get("http_5xx", 0)) for r in records),
    }


def render(run: dict[str, Any], head: str, when: str, seconds: float) -> str:
    records: list[dict[str, Any]] = run["records"]
    t = totals(records)
    out = [
        "# Reliability: what benchlink promises, and the last run that checked it",
        "",
        f"Written by `make reliability` ({'long form' if run['long'] else 'short slice'}) on"
        f" {when}, commit `{head}`, seed **{run['seed']}** (replay:"
        f" `BENCHLINK_RELIABILITY_SEED={run['seed']} make reliability`), in"
        f" {seconds / 60:.1f} min. Do not edit: the next run rewrites this page.",
        "",
        "## Guarantees",
        "",
        "| Promise | Under which faults | Measured how |",
        "|---|---|---|",
        *(f"| {p} | {f} | {m} |" for p, f, m in GUARANTEES),
        "",
        "## The last run",
        "",
        f"Readings checked: **{t['readings']}** · lost: **{t['lost']}** · doubled:"
        f" **{t['doubled']}** · 5xx other than 503: **{t['http_5xx']}**",
        "",
        "| Fault injected | Times |",
        "|---|---|",
        *(f"| {k} | {n} |" for k, n in t["faults"].items()),
        "",
        "| Test | Readings | Lost | Doubled | Details |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        details = {
            k: v
            for k, v in r.items()
            if k not in ("section", "test", "faults", "readings", "lost", "doubled")
            and not (r["section"] == "soak" and k in SOAK_TABLES)
        }
        text = ", ".join(f"{k}: {json.dumps(v)}" for k, v in details.items())
        out.append(
            f"| {r['test']} | {r.get('readings', '—')} | {r.get('lost', '—')} |"
            f" {r.get('doubled', '—')} | {text} |"
        )
    window = [r for r in records if r["section"] == "serial_window"]
    if window:
        w = window[0]
        out += [
            "",
            "## The serial loss window on kill -9",
            "",
            f"At {w['rate']} lines/s, a kill -9 of the daemon lost at most **{w['max_lines']}"
            f" lines** ({w['max_ms']} ms of the device's output; mean {w['mean_lines']}) that"
            " it had read but not committed, over"
            f" {len(w['losses'])} kills. The serial source hands lines to the group commit at"
            " most 0.2 s after the first of a group; a reopened port also drops the partial"
            " line it starts in the middle of.",
        ]
    out += soak_section([r for r in records if r["section"] == "soak"])
    out += also_section(run.get("also", {}))
    out += ["", "## Not promised", "", *(f"- {n}" for n in NOT_PROMISED), ""]
    return "\n".join(out)


#: the soak's figures that have a section of their own
SOAK_TABLES = ("rss_mb", "rss_slope_mb_per_min", "p99_ms", "p99_slope_ms_per_min")


def soak_section(records: list[dict[str, Any]]) -> list[str]:
    if not records:
        return []
    s = records[0]
    out = [
        "",
        "## Soak",
        "",
        f"{s['minutes']} min, {s['readings']} readings from the device, each stored once and"
        f" received once by every viewer ({s['viewer_readings']} deliveries),"
        f" {s['chart_queries']} chart queries, {s['errors']} errors. Slopes are least"
        " squares over the run after its warm-up. The machine is shared: its load average"
        f" went from {s['load_average'][0]} to {s['load_average'][1]} during the run.",
        "",
        "| Process | RSS after warm-up (MB) | RSS at the end (MB) | Slope (MB/min) |",
        "|---|---|---|---|",
    ]
    for name, (first, last) in s["rss_mb"].items():
        out.append(f"| {name} | {first} | {last} | {s['rss_slope_mb_per_min'][name]} |")
    out += ["", "| Latency | p99, first window (ms) | p99, last window (ms) | Slope (ms/min) |"]
    out.append("|---|---|---|---|")
    for name, (first, last) in s["p99_ms"].items():
        out.append(f"| {name} | {first} | {last} | {s['p99_slope_ms_per_min'][name]} |")
    return out


def also_section(also: dict[str, dict[str, int]]) -> list[str]:
    if not also:
        return []
    out = ["", "## Also run", "", "| Tests | Passed | Skipped |", "|---|---|---|"]
    for path, n in also.items():
        out.append(f"| `{path}` | {n.get('passed', 0)} | {n.get('skipped', 0)} |")
    return out


def outcomes(junit: Path) -> dict[str, dict[str, int]]:
    """Passed and skipped tests of each ALSO_RUN file, from pytest's JUnit XML."""
    counts: dict[str, Counter[str]] = {path: Counter() for path in ALSO_RUN}
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        for also in ALSO_RUN:
            if path == also or path.startswith(also[:-3] + "/"):
                kind = "skipped" if case.find("skipped") is not None else "passed"
                failed = case.find("failure") is not None or case.find("error") is not None
                counts[also]["failed" if failed else kind] += 1
    return {path: dict(c) for path, c in counts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_version(parser)
    parser.add_argument("--seed", type=int, help="replay a run (default: a new seed)")
    parser.add_argument("--short", action="store_true", help="the slice `make test` runs")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "docs" / "reliability.md",
        help="the page to write (default: docs/reliability.md)",
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        env_seed = os.environ.get("BENCHLINK_RELIABILITY_SEED", "")
        if env_seed and not env_seed.isdigit():
            parser.error(f"BENCHLINK_RELIABILITY_SEED={env_seed!r}: give a whole number")
        seed = int(env_seed) if env_seed else random.SystemRandom().randrange(10**6)
    print(f"reliability: seed {seed}, {'slice' if args.short else 'long form'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="benchlink-reliability-") as tmp:
        figures = Path(tmp) / "figures.json"
        env = {
            **os.environ,
            "BENCHLINK_RELIABILITY": "short" if args.short else "long",
            "BENCHLINK_RELIABILITY_SEED": str(seed),
            "BENCHLINK_RELIABILITY_FIGURES": str(figures),
            "BENCHLINK_REQUIRE_SERVICES": os.environ.get("BENCHLINK_REQUIRE_SERVICES", "1"),
        }
        started = time.monotonic()
        # The long sections run for minutes each: past pyproject's 300 s per-test timeout.
        timeout = [] if args.short else ["--timeout", "3600"]
        # The check of the committed page is for `make test`: this run is what writes it.
        page_check = "tests/reliability/test_report.py::test_the_committed_page_is_the_runners"
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "tests/reliability", *ALSO_RUN, "-q", *timeout]
        cmd += ["--deselect", page_check, f"--junitxml={junit}"]
        cmd += args.pytest_args
        rc = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
        seconds = time.monotonic() - started
        if rc != 0:
            print(f"reliability: FAILED (pytest exit {rc}); {args.out} not rewritten")
            return rc
        run = json.loads(figures.read_text())
        run["also"] = outcomes(junit)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.out.write_text(render(run, commit(), when, seconds))
    t = totals(run["records"])
    print(
        f"reliability: passed in {seconds / 60:.1f} min; readings {t['readings']}, lost"
        f" {t['lost']}, doubled {t['doubled']}, 5xx {t['http_5xx']}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
