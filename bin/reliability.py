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
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.cli import Parser, add_version, plain  # noqa: E402

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
        " pg_terminate_backend of its PostgreSQL connections",
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
    "Not run by this suite yet: a full filesystem, schemathesis over every endpoint, the"
    " access matrix, a 10-minute soak, Mosquitto restarts, kill -9 during MQTT capture.",
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
    out += ["", "## Not promised", "", *(f"- {n}" for n in NOT_PROMISED), ""]
    return "\n".join(out)


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
        cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", *timeout]
        cmd += ["--deselect", page_check]
        cmd += args.pytest_args
        rc = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
        seconds = time.monotonic() - started
        if rc != 0:
            print(f"reliability: FAILED (pytest exit {rc}); {args.out} not rewritten")
            return rc
        run = json.loads(figures.read_text())
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
