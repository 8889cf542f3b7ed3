"""Soak: steady ingest from 50 sensors through 2 edges, 5 live viewers and chart queries,
against the real cloud (a private PostgreSQL cluster, 2 workers). RSS of every process is
sampled from /proc and the p99 latencies per window; their least-squares slopes are reported. No error anywhere, and
the counts are exact: every reading the broker acknowledged is stored once and reaches every
viewer once.

The long form runs 10 minutes and bounds the RSS slopes at 2 MB/min per process: a small
object kept per reading (a few hundred bytes at 200 readings/s) grows faster. The slice in
``make test`` runs 25 s: too short to prove anything flat, it proves the harness and the exact
counts, with loose bounds.

The device publishes every sensor's readings with its own timestamp into a private Mosquitto;
the edges run as deployed (sync every second). A reading's live latency is its arrival at a
viewer minus that timestamp: MQTT, the edge's commit, its sync, the cloud's commit, the
stream. A chart query asks for the last minute of a random sensor (a fixed amount of data, so
its latency stays flat unless something degrades)."""

from __future__ import annotations

import collections
import json
import random
import statistics
import threading
import time
import uuid
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.edge.helpers import EdgeProcess, wait_for, write_config
from tests.live.helpers import register_sensor
from tests.reliability.conftest import Figures, scale
from tests.reliability.device import Message, PacedDevice
from tests.reliability.helpers import Tally, tally
from tests.reliability.soak import (
    ChartQueries,
    RssSampler,
    Viewer,
    cloud_processes,
    slope_per_min,
    watch_all,
    windowed_p99,
)
from tests.support.cloud import Bench, CloudServer, bootstrap
from tests.support.pgcluster import private_cluster
from tests.support.services import RestartableMosquitto, restartable_mosquitto

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]

SENSORS, EDGES, PER_SENSOR_HZ = 50, 2, 4.0
VIEWERS = ("websocket", "websocket", "websocket", "sse", "sse")
#: slopes allowed (long form / slice): a slice cannot prove flatness, only that it works
RSS_SLOPE_MB_MIN = scale(50.0, 2.0)
#: a p99's slope as a share of its median window, per minute: 0.1 fails a p99 that doubles
#: within the 8 measured minutes. Relative, because the machine is shared: the level follows
#: the load of others, a trend of our own shows as growth against it.
P99_SLOPE_SHARE_MIN = scale(10.0, 0.1)


def stored(database_url: str, sensors: list[str]) -> collections.Counter[Hashable]:
    from cloud.db.engine import make_engine
    from cloud.db.models import TelemetryReading as R

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(R.sensor_id, R.raw_value).where(
                    R.sensor_id.in_([uuid.UUID(s) for s in sensors])
                )
            ).all()
    finally:
        engine.dispose()
    return collections.Counter((str(s), raw) for s, raw in rows)


def topic(edge: int, sensor_id: str) -> str:
    return f"bench{edge}/sensors/{sensor_id}/readings"


def start_edges(
    tmp_path: Path, bench: Bench, sensors: list[tuple[str, str]], broker: RestartableMosquitto
) -> list[EdgeProcess]:
    edges = []
    for e in range(EDGES):
        cfg = write_config(
            tmp_path / f"edge{e}.toml",
            cloud_url=bench.base_url,
            buffer=tmp_path / f"buffer{e}.db",
            mqtt_url=broker.broker.url,
            client_id=f"soak-{e}-{uuid.uuid4().hex[:6]}",
            interval_s=1.0,  # as deployed (the default)
            batch_size=100,
            sensors=[
                {
                    "sensor_id": sid,
                    "token": token,
                    "run_id": bench.run_id,
                    "capture_session_id": bench.capture_session_id,
                    "source": "mqtt",
                    # a topic tree per bench: every daemon also takes the default wildcard
                    # (benchlink/sensors/+/readings), and would dead-letter the other's sensors
                    "topic": topic(e, sid),
                }
                for sid, token in sensors[e::EDGES]
            ],
        )
        cfg.chmod(0o600)  # it holds tokens: as deployed (the daemon warns otherwise)
        edge = EdgeProcess(cfg, tmp_path / f"edge{e}.log")
        edge.start()
        edges.append(edge)
    for edge in edges:  # their persistent sessions exist from here: the device may publish
        wait_for(lambda edge=edge: "MQTT: connected" in edge.log.read_text(), 60, "an edge up")
    return edges


def processes(
    cloud: CloudServer, edges: list[EdgeProcess], broker: RestartableMosquitto
) -> dict[str, int]:
    assert cloud.proc is not None and broker.proc is not None
    pids = cloud_processes(cloud.proc.pid)
    pids |= {f"edge {i + 1}": e.proc.pid for i, e in enumerate(edges) if e.proc}
    return pids | {"mosquitto": broker.proc.pid}


def problems(tmp_path: Path, edges: list[EdgeProcess]) -> list[str]:
    """Warnings and errors the processes logged (their logs are at level warning or info)."""
    out = []
    for log in [tmp_path / "cloud.log", *(e.log for e in edges)]:
        for line in log.read_text().splitlines():
            if any(w in line for w in ("WARNING", "ERROR", "CRITICAL", "Traceback")):
                out.append(f"{log.name}: {line[:300]}")
    return out


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A private PostgreSQL cluster: the machine's shared server ran out of connections
    ("too many clients") under other tests, and the soak measures benchlink, not that."""
    with private_cluster() as pg:
        yield pg.url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RestartableMosquitto]:
    (tmp_path / "mosq").mkdir()
    with restartable_mosquitto(tmp_path / "mosq") as b:
        yield b


def test_soak_50_sensors_2_edges_5_viewers_and_chart_queries(
    pg_url: str,
    broker: RestartableMosquitto,
    tmp_path: Path,
    rng: random.Random,
    figures: Figures,
    seed_note: str,
) -> None:
    # The warm-up covers what fills up by design: each worker's live ring (20,000 readings,
    # 100 s at this rate), connection pools, caches.
    seconds, warmup = scale(25, 600), scale(8, 120)
    cloud = CloudServer(pg_url, workers=2, own_group=True, log_path=tmp_path / "cloud.log")
    cloud.start(timeout=120)
    with ExitStack() as stack:
        stack.callback(cloud.kill_group)
        bench = bootstrap(cloud.url)
        sensors = [(bench.sensor_id, bench.token)]
        with ThreadPoolExecutor(4) as pool:
            sensors += pool.map(lambda _: register_sensor(bench), range(SENSORS - 1))
        edges = start_edges(tmp_path, bench, sensors, broker)
        for edge in edges:
            stack.callback(lambda edge=edge: edge.proc and edge.kill9())
        run = soak(cloud, bench, [s for s, _ in sensors], edges, broker, rng, seconds)
        status = [json.loads(e.cli("status", "--json").stdout) for e in edges]
        for edge in edges:
            edge.terminate()
    result = check_counts_and_errors(run, stored(pg_url, [s for s, _ in sensors]), seed_note)
    assert [s["dead_letters"] for s in status] == [0] * EDGES, status
    assert problems(tmp_path, edges) == []
    report = slopes(run, warmup, scale(5, 30))
    for name, slope in report["rss_slope_mb_per_min"].items():
        assert slope <= RSS_SLOPE_MB_MIN, f"{name}: RSS grows {slope:.2f} MB/min ({report})"
    for name, slope in report["p99_slope_ms_per_min"].items():
        bound = P99_SLOPE_SHARE_MIN * report["p99_median_ms"][name]
        assert slope <= bound, f"{name}: p99 grows {slope:.1f} ms/min > {bound:.1f} ({report})"
    figures.record(
        "soak",
        f"soak: {SENSORS} sensors, {EDGES} edges, {len(VIEWERS)} viewers, chart queries",
        faults={},
        readings=result.captured,
        lost=result.lost,
        doubled=result.doubled,
        http_5xx=sum(n for a, n in run["chart"].answers.items() if a >= 500),
        minutes=round(seconds / 60, 1),
        viewer_readings=sum(sum(v.got.values()) for v in run["viewers"]),
        chart_queries=sum(run["chart"].answers.values()),
        errors=0,
        **report,
    )


def check_counts_and_errors(
    run: dict[str, Any], in_cloud: collections.Counter[Hashable], seed_note: str
) -> Tally:
    """Every acknowledged reading stored once and seen once by every viewer; no error."""
    assert sorted(run["pids_after"]) == sorted(run["pids"].values()), "a process died"
    result = tally(run["acked"], in_cloud)
    assert result.exact, f"{result} ({seed_note})"
    assert result.captured == run["published"], "the broker did not acknowledge everything"
    for v in run["viewers"]:
        assert v.errors == [], f"{v.kind} viewer: {v.errors[:3]}"
        assert tally(run["acked"], v.got).exact, f"{v.kind}: {tally(run['acked'], v.got)}"
    assert set(run["chart"].answers) == {200}, run["chart"].answers
    return result


def soak(
    cloud: CloudServer,
    bench: Bench,
    sensors: list[str],
    edges: list[EdgeProcess],
    broker: RestartableMosquitto,
    rng: random.Random,
    seconds: float,
) -> dict[str, Any]:
    """Run the load for ``seconds``; what every probe saw."""
    pids = processes(cloud, edges, broker)
    viewers = [Viewer(kind) for kind in VIEWERS]
    chart = ChartQueries(cloud.url, bench, sensors, random.Random(rng.random()))
    stop = threading.Event()
    threads = [
        threading.Thread(target=watch_all, args=(cloud.url, bench, viewers, stop)),
        threading.Thread(target=chart.run, args=(stop,)),
    ]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(v.subscribed or v.errors for v in viewers), 60, "the viewers")
        rate = SENSORS * PER_SENSOR_HZ
        device = PacedDevice(broker.broker.host, broker.port, rate, message(sensors)).start()
        started_wall, sampler = time.time(), RssSampler(pids)
        load = []
        while time.monotonic() - sampler.started < seconds:
            sampler.sample()
            load.append(float(Path("/proc/loadavg").read_text().split()[0]))
            time.sleep(scale(1.0, 5.0))
        acked = collections.Counter(device.stop())
        wait_for(
            lambda: all(v.errors or sum(v.got.values()) >= len(acked) for v in viewers),
            120,
            "every viewer to get every reading",
        )
        time.sleep(1.0)  # a late copy would arrive now
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return {
        "pids": pids,
        "pids_after": processes(cloud, edges, broker).values(),
        "acked": acked,
        "published": device.published,
        "viewers": viewers,
        "chart": chart,
        "rss": sampler.samples,
        "started_wall": started_wall,
        "load": load,
    }


def message(sensors: list[str]) -> Message:
    def make(k: int) -> tuple[str, bytes, Hashable]:
        i = k % len(sensors)
        sensor, seq = sensors[i], float(k // len(sensors))
        ts = datetime.now(UTC).isoformat()
        body = json.dumps({"timestamp": ts, "raw_value": seq}).encode()
        return topic(i % EDGES, sensor), body, (sensor, seq)

    return make


def slopes(run: dict[str, Any], warmup: float, window_s: float) -> dict[str, Any]:
    """RSS and p99 slopes after the warm-up (connections, caches, the first pages)."""
    rss = {name: [(t, mb) for t, mb in s if t >= warmup] for name, s in run["rss"].items()}
    t0 = run["started_wall"]
    live = [(t - t0, ms) for v in run["viewers"] for t, ms in v.latencies]
    chart = [(t - t0, ms) for t, ms in run["chart"].latencies]
    p99 = {
        "live": windowed_p99(live, window_s, warmup),
        "chart": windowed_p99(chart, window_s, warmup),
    }
    return {
        "rss_mb": {n: [round(s[0][1], 1), round(s[-1][1], 1)] for n, s in rss.items()},
        "rss_slope_mb_per_min": {n: round(slope_per_min(s), 3) for n, s in rss.items()},
        "p99_ms": {n: [round(w[0][1]), round(w[-1][1])] for n, w in p99.items()},
        "p99_slope_ms_per_min": {n: round(slope_per_min(w), 1) for n, w in p99.items()},
        "p99_median_ms": {n: round(statistics.median(y for _, y in w)) for n, w in p99.items()},
        "load_average": [run["load"][0], run["load"][-1]],
    }
