"""A run of 300,000 readings read by a notebook through the client, in bounded memory: the
readings stream in as Arrow record batches, so a page at a time costs a fraction of what
arrives, and the whole run as one frame costs the record batches and the frame, never the
answer's body twice. Measured in a subprocess (tests/client/memory_probe.py) from the
kernel's peak RSS; the JSON list this replaced grew by ~127 MB for the frame and ~96 MB a
page at a time, for a 15 MB stream (MB: 2**20 bytes)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.ingest import store_readings
from tests.client.conftest import new_project, send_readings
from tests.support.cloud import REPO, CloudServer, bootstrap

N = 300_000
BATCH = 10_000  # the most one POST of the API takes
MB = 1024 * 1024
LINEAR = {"kind": "linear", "payload": {"a": 2.0, "b": 1.0}}


def _sqlite_run(cloud: CloudServer, start: datetime) -> tuple[str, str, str]:
    """N readings of 1 kHz from ``start`` through the API, as an edge sends them."""
    with new_project(cloud.url) as c:
        new = c.sensors.create(
            "oven", type="thermocouple", input_unit="mV", display_unit="C", profile=LINEAR
        )
        session = c.experiments.create("e").runs.create("big").sessions.create(started_at=start)
        ids = (c.config.user or "", c.config.project or "", session.run_id)
    step = timedelta(milliseconds=1)
    for lo in range(0, N, BATCH):
        raws = [(i % 1000) * 0.01 for i in range(lo, lo + BATCH)]
        at = start + step * lo
        send_readings(cloud.url, new.token, new.sensor.id, session, raws, start=at, step=step)
    return ids


def _postgres_run(cloud: CloudServer, start: datetime) -> tuple[str, str, str]:
    """N readings of 10 kHz from ``start`` by ingest's binary COPY: seconds, not minutes."""
    bench = bootstrap(cloud.url)
    store_readings(cloud.database_url, bench, N, start)
    return bench.owner_user_id, bench.project_id, bench.run_id


def _probe(cloud: CloudServer, ids: tuple[str, str, str], warmup_until: datetime) -> Any:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.client.memory_probe",
            cloud.url,
            *ids,
            warmup_until.isoformat(),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_a_large_run_is_read_in_bounded_memory(cloud: CloudServer) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    postgres = cloud.database_url.startswith("postgresql")
    ids = (_postgres_run if postgres else _sqlite_run)(cloud, start)

    out = _probe(cloud, ids, start + timedelta(milliseconds=100))

    pages, frame = out["batches"], out["frame"]
    for read in (pages, frame):
        assert read["count"] == read["readings"] == N
    stream = frame["bytes"]
    assert pages["bytes"] == stream > 40 * N  # the Arrow stream: ~50 bytes a reading
    # A page at a time: a page's record batch and frame, not the run.
    assert pages["growth"] < stream / 3, f"{pages['growth'] / MB:.1f} MB for pages"
    # The whole run: its record batches and the frame made from them; holding the answer's
    # body besides (twice the stream) would be over this.
    bound = 2 * stream + frame["frame_bytes"]
    assert frame["growth"] < bound, f"{frame['growth'] / MB:.1f} MB for the frame"
    print(
        f"\n{'postgres' if postgres else 'sqlite'}: stream {stream / MB:.1f} MB, frame "
        f"{frame['frame_bytes'] / MB:.1f} MB; peak RSS growth {pages['growth'] / MB:.1f} MB "
        f"page by page, {frame['growth'] / MB:.1f} MB for the frame"
    )
