"""The Python client reading a run: ``run.telemetry()`` (the Arrow export streamed into a
pandas frame with the client's columns and description) against the plainest read of the
same export into pandas, raw httpx and pyarrow (the whole body, ``read_all()``,
``to_pandas()``), in the same run and process. Rounds alternate, best of each: on a shared
machine one read of either can be off by half."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import pyarrow as pa

from bench.harness import Cloud, Row, Sizes, pg_database
from bench.project import Bench, bootstrap
from bench.store import Target
from bench.store import store_readings as store
from benchlink import Client

#: 10 kHz: one sensor's readings, as a fast thermocouple logger sends them.
STEP_US = 100
#: The client against the raw read: at least this (it does more: columns, units, attrs).
MIN_RATIO = 0.8
ROUNDS = 3


def _measured(read: Callable[[], int]) -> tuple[float, int]:
    """Seconds, and the rows ``read`` returned. (Not memory: after the first read this
    process's allocator holds freed memory that the next reuses; the client's memory is
    measured in a process of its own by tests/client/test_export_memory.py.)"""
    started = time.perf_counter()
    rows = read()
    return time.perf_counter() - started, rows


def _raw(bench: Bench) -> int:
    params = {"format": "arrow", "run_id": bench.run_id}
    with bench.client() as c:
        c.timeout = httpx.Timeout(1800)
        r = c.get("/api/v1/telemetry/export", params=params)
        r.raise_for_status()
        df = pa.ipc.open_stream(r.content).read_all().to_pandas()
    return len(df)


def _client(bench: Bench) -> int:
    with Client(
        bench.base_url, user=bench.owner_user_id, project=bench.project_id, role="owner",
        timeout=1800,
    ) as c:  # fmt: skip
        return len(c.runs.get(bench.run_id).telemetry())


def telemetry_read(sizes: Sizes, logs: Path) -> Row:
    n = sizes.client_readings
    with pg_database() as url, Cloud(url, 1, logs / "cloud-client.log") as cloud:
        bench = bootstrap(cloud.url)
        target = Target.of(bench)
        start_us = (time.time_ns() // 1000 - 3 * 3_600_000_000) // STEP_US * STEP_US
        store(url, [target], start_us, STEP_US, range(n), lambda i: 20 + (i % 1000) / 100)
        print(f"   stored {n:,}", file=sys.stderr)
        times: dict[str, list[float]] = {"raw": [], "client": []}
        assert cloud.rss is not None
        cloud.rss.reset()
        for _ in range(ROUNDS + 1):  # the first round warms imports, pools and the route
            for name, read in (("raw", _raw), ("client", _client)):
                seconds, rows = _measured(partial(read, bench))
                assert rows == n, (name, rows)
                times[name].append(seconds)
        api_peak = cloud.rss.mb
    for kept in times.values():
        del kept[0]
    raw, client = n / min(times["raw"]), n / min(times["client"])
    return Row(
        name="client_telemetry",
        what=f"client run.telemetry() ({n:,} readings) to pandas, readings/s",
        figure=client,
        unit="readings/s",
        ceiling=raw,
        ceiling_what="httpx body + pyarrow read_all().to_pandas(), same export",
        target=f">= {MIN_RATIO:.0%} of ceiling",
        passed=client / raw >= MIN_RATIO,
        rss_mb={"cloud": api_peak},
        extra={
            "seconds": [round(s, 2) for s in times["client"]],
            "ceiling_seconds": [round(s, 2) for s in times["raw"]],
        },
    )
