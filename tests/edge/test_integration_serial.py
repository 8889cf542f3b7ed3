"""Serial end to end: the simulator on a pty -> the daemon (subprocess, killed -9) -> the cloud."""

from __future__ import annotations

import collections
import random
import re
import time
from datetime import datetime
from pathlib import Path

import httpx

from common.profiles import build_converter
from edge.buffer import Buffer
from tests.edge.helpers import (
    EdgeProcess,
    RealCloud,
    running,
    serial_sensor,
    simulator,
    wait_for,
    write_config,
)

PROFILE = {
    "version": "1",
    "kind": "thermocouple",
    "payload": {"type": "K", "cold_junction_c": 25.0},
}


def committed(buffer: Path) -> list[tuple[datetime, float]]:
    buf = Buffer(buffer)
    try:
        return [
            (datetime.fromisoformat(ts), raw)
            for ts, raw in buf.conn.execute("SELECT ts, raw_value FROM readings")
        ]
    finally:
        buf.close()


def metric(edge: EdgeProcess, name: str, since: int = 0) -> float:
    """``name`` summed from the metrics of the daemon that logged after offset ``since``."""
    log = edge.log.read_text()[since:]
    port = re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log)[-1]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_simulator_readings_arrive_converted_exactly_once_through_kill9(
    cloud: RealCloud, tmp_path: Path
) -> None:
    (a,) = cloud.bootstrap(1, profile=PROFILE)
    link = tmp_path / "ttySIM"
    with simulator(
        link,
        *("--protocol", "value", "--type", "K", "--rate", "200"),
        *("--garbage-every", "25", "--period-s", "5", "--seed", "7"),
    ) as sim:
        cfg = write_config(
            tmp_path / "edge.toml",
            cloud_url=cloud.url,
            buffer=tmp_path / "buffer.db",
            interval_s=0.1,
            batch_size=50,
            sensors=[serial_sensor(a, link)],
        )
        edge = EdgeProcess(cfg, tmp_path / "edge.log")
        rng = random.Random()
        with running(edge):
            for _ in range(4):
                time.sleep(rng.uniform(0.5, 1.2))
                edge.kill9()
                last_start = len(edge.log.read_text())  # what the last daemon logs comes after
                edge.start()
            # The last daemon's own lines: before, a killed one's port could pass for its own.
            wait_for(
                lambda: "open (value" in edge.log.read_text()[last_start:], 20, "the last port"
            )
            # enough lines from the last daemon, however long this machine takes to start one
            before = len(committed(tmp_path / "buffer.db"))
            wait_for(
                lambda: len(committed(tmp_path / "buffer.db")) > before + 200, 30, "200 readings"
            )
            # garbage counted
            assert metric(edge, "benchlink_edge_serial_skipped_total", last_start) > 0
            sim.terminate()
            sim.wait(10)
            time.sleep(0.5)
            edge.terminate()
        stored = committed(tmp_path / "buffer.db")
        assert len(stored) > 200
        edge.start()
        try:
            wait_for(lambda: len(cloud.telemetry(a)) >= len(stored), 60, "sync of every reading")
            time.sleep(0.5)
        finally:
            edge.terminate()
    items = cloud.telemetry(a)
    in_cloud = collections.Counter(
        (datetime.fromisoformat(i["timestamp"]), i["raw_value"]) for i in items
    )
    assert in_cloud == collections.Counter(stored)  # every committed line once, nothing else
    conv = build_converter("thermocouple", PROFILE["payload"], "C")  # type: ignore[arg-type]
    for i in items[:: max(1, len(items) // 50)]:
        assert abs(i["value"] - conv.convert(i["raw_value"])) < 1e-6
        assert 0 < i["value"] < 400
