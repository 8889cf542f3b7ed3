"""``make bench``: every benchmark, each beside its ceiling measured in the same run.

    python bench/run.py                 # full sizes (about ten minutes on 2 cores)
    python bench/run.py --quick         # tiny sizes: proves the script works, in seconds
    python bench/run.py --only telemetry_ingest --only chart_query
    PEERS=1 python bench/run.py         # also the MLflow tracking server, side by side

Prints one table and writes ``bench/results/latest.json`` (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import alarms, client, edge, export, fleet, ingest, live, query, reprocess
from bench.harness import Row, Sizes

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

#: name -> (rows it produces, runner)
Runner = Callable[[Sizes, Path, bool, list[Row]], list[Row]]
BENCHMARKS: dict[str, tuple[tuple[str, ...], Runner]] = {
    "telemetry_ingest": (
        ("telemetry_ingest",),
        lambda s, logs, peers, done: [ingest.telemetry_ingest(s, logs)],
    ),
    "alarm_ingest": (
        ("alarm_ingest",),
        lambda s, logs, peers, done: [alarms.alarm_ingest(s, logs)],
    ),
    "reprocess": (
        ("reprocess", "reprocess_ingest"),
        lambda s, logs, peers, done: reprocess.reprocess(s, logs),
    ),
    "metrics_ingest": (
        ("metrics_ingest", "metrics_vs_mlflow"),
        lambda s, logs, peers, done: ingest.metrics_ingest(s, logs, peers),
    ),
    "edge_capture": (("edge_capture",), lambda s, logs, peers, done: [edge.capture(s, logs)]),
    "edge_capture_rules": (
        ("edge_capture_rules",),
        lambda s, logs, peers, done: [edge.capture_rules(s, logs)],
    ),
    "sync_drain": (
        ("sync_drain",),
        lambda s, logs, peers, done: [edge.sync_drain(s, logs, _figure(done, "telemetry_ingest"))],
    ),
    "live_latency": (("live_latency",), lambda s, logs, peers, done: [live.latency(s, logs)]),
    "chart_query": (("chart_query",), lambda s, logs, peers, done: [query.chart(s, logs)]),
    "export": (("export",), lambda s, logs, peers, done: [export.export(s, logs)]),
    "export_columnar": (
        ("export_parquet", "export_arrow"),
        lambda s, logs, peers, done: export.columnar(s, logs),
    ),
    "fleet_heartbeats": (
        ("fleet_heartbeats",),
        lambda s, logs, peers, done: [fleet.heartbeats(s, logs)],
    ),
    "client_telemetry": (
        ("client_telemetry",),
        lambda s, logs, peers, done: [client.telemetry_read(s, logs)],
    ),
    "chart_filters": (
        tuple(
            [
                f"chart_{f}_{size}"
                for f in ("sensor", "sensor_session", "sensor_run")
                for size in ("small", "large")
            ]
            + ["chart_window", "list_session", "list_run", "list_sensor", "run_page"]
        ),
        lambda s, logs, peers, done: query.filters(s, logs),
    ),
}


def _figure(rows: list[Row], name: str) -> float | None:
    return next((r.figure for r in rows if r.name == name), None)


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if unit == "ms" or abs(x) < 100:
        return f"{x:,.1f}"
    return f"{x:,.0f}"


def table(rows: list[Row]) -> str:
    head = ["what", "figure", "ceiling", "ratio", "target", "pass?", "peak RSS MB"]
    lines = []
    for r in rows:
        ratio = f"{r.ratio:.1%}" if r.ratio is not None else "—"
        if r.name == "metrics_vs_mlflow" and r.ratio is not None:
            ratio = f"{r.ratio:.1f}x"
        verdict = {True: "yes", False: "NO", None: "—"}[r.passed]
        figure = _fmt(r.figure, r.unit) if r.figure is not None else "not measured"
        if r.note and r.passed is None:
            verdict = r.note
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r.rss_mb.items()) or "—"
        ceiling = f"{_fmt(r.ceiling, r.unit)} ({r.ceiling_what})" if r.ceiling else "—"
        lines.append([r.what, figure, ceiling, ratio, r.target, verdict, rss])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(head), sep, *(fmt(x) for x in lines)])


def failed_row(name: str, exc: BaseException) -> Row:
    return Row(name=name, what=name, figure=None, unit="", note=f"error: {exc}"[:200])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="repeatable")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    peers = os.environ.get("PEERS", "") not in ("", "0", "no", "false")
    sizes = Sizes.quick() if args.quick else Sizes()
    chosen = args.only or list(BENCHMARKS)
    rows: list[Row] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="benchlink-bench-") as tmp:
        logs = Path(tmp)
        for name in chosen:
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                rows += BENCHMARKS[name][1](sizes, logs, peers, rows)
            except Exception as exc:  # one broken benchmark must not hide the others
                traceback.print_exc()
                for log in sorted(logs.glob("*.log")):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
                rows += [failed_row(n, exc) for n in BENCHMARKS[name][0]]
            print(f"   {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generated_at": datetime.now(UTC).isoformat(),
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "peers": peers,
        "quick": args.quick,
        "seconds": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sizes": vars(sizes),
        "rows": [r.as_json() for r in rows],
    }
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nwritten to {args.out}")
    return 1 if any(r.figure is None and r.note.startswith("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
