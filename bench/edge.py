"""Edge benchmarks, on the real daemon (``benchlink-edge run`` in its own process).

capture  one publisher sends QoS 1 messages (one JSON reading each) through a private
         Mosquitto; the figure is readings committed to the daemon's SQLite buffer per second
         (each acked to the broker only after its commit). The ceiling is a bare paho
         subscriber in its own process that acks and discards, fed by the same publisher.
drain    a backlog pre-filled into the buffer (``Buffer.commit``, as the writer would) is
         synced to a real cloud on PostgreSQL; the ceiling is the cloud ingest figure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness import (
    BIN,
    Cloud,
    MachineCpu,
    PeakRss,
    Row,
    Sizes,
    cpu_seconds,
    libpq,
    pg_database,
)
from bench.project import Bench, backdate, bootstrap
from bench.services import Broker, free_port, private_mosquitto
from common.edge_rules import EdgeProfile, EdgeRule, EdgeRules
from edge.buffer import Buffer

REPO = Path(__file__).resolve().parents[1]
NIL = "00000000-0000-4000-8000-0000000000"


# --- the daemon ------------------------------------------------------------------------------


def _toml_str(x: Any) -> str:
    return json.dumps(str(x))


def write_config(
    path: Path,
    buffer: Path,
    cloud_url: str,
    sensors: list[dict[str, str]],
    broker: Broker | None = None,
) -> None:
    lines = [
        "[cloud]",
        f"url = {_toml_str(cloud_url)}",
        "[buffer]",
        f"path = {_toml_str(buffer)}",
        "[sync]",
        "batch_size = 1000",
        "interval_s = 1.0",
        "[metrics]",
        "enabled = false",
    ]
    if broker is not None:
        lines += ["[mqtt]", f"url = {_toml_str(broker.url)}", 'client_id = "bench-edge"']
    for s in sensors:
        lines += ["[[sensors]]"] + [f"{k} = {_toml_str(v)}" for k, v in s.items()]
    path.write_text("\n".join(lines) + "\n")


class Daemon:
    """``benchlink-edge run`` in its own process, with a notify socket as systemd would give
    it, so that a figure can start when the daemon says READY (its work starts after that)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = config.with_name("notify.sock")
        address.unlink(missing_ok=True)
        self.notify.bind(str(address))
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "benchlink-edge"), "--config", str(config), "run"],
                cwd=REPO,
                stdout=out,
                stderr=out,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    "NOTIFY_SOCKET": str(address),
                    # as the unit (edge/benchlink-edge.service) runs it: its RSS is measured
                    "MALLOC_ARENA_MAX": "2",
                },
            )
        self.rss = PeakRss(self.proc.pid)

    def ready(self, timeout: float = 60) -> float:
        """Wait for READY=1; return the time.time() it came."""
        self.notify.settimeout(timeout)
        while b"READY=1" not in self.notify.recv(4096).split(b"\n"):
            pass
        return time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()


def _count(buffer: Path, sql: str) -> int:
    if not buffer.exists():
        return 0
    conn = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(sql).fetchone()
        return int(row[0] or 0)
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        conn.close()


def wait_for(
    probe: Any, target: int, timeout: float, sampler: PeakRss | None = None, step: float = 0.02
) -> float:
    """Poll ``probe()`` until it reaches ``target``; return the time.time() it did."""
    deadline = time.monotonic() + timeout
    while True:
        if sampler is not None:
            sampler.sample()
        got = probe()
        if got >= target:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{got} of {target} after {timeout}s")
        time.sleep(step)


# --- capture ----------------------------------------------------------------------------------


def publish(broker: Broker, topic: str, n: int, *, first: int = 0) -> float:
    """Publish ``n`` QoS 1 readings as fast as the broker takes them; return the start time."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    base = datetime.now(UTC) - timedelta(minutes=5)
    payloads = [
        json.dumps(
            {
                "timestamp": (base + timedelta(microseconds=100 * i)).isoformat(),
                "raw_value": 20 + (i % 100) * 0.01,
            }
        ).encode()
        for i in range(first, first + n)
    ]
    started = time.time()
    infos = [client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()
    return started


def _publish_into(started: list[float], broker: Broker, topic: str, n: int) -> None:
    started.append(publish(broker, topic, n, first=1))


BARE_SUBSCRIBER = """
import sys, time, paho.mqtt.client as paho
host, port, topic, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seen = 0
def on_connect(c, u, f, rc, p):
    c.subscribe(topic, qos=1)
def on_subscribe(c, u, mid, rc, p):
    print("ready", flush=True)
def on_message(c, u, m):
    global seen
    seen += 1  # paho acks QoS 1 itself once this returns; the message is dropped
    if seen == n:
        print(f"done {time.time()!r}", flush=True)
        c.disconnect()
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
c.max_inflight_messages_set(0)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, port)
c.loop_forever()
"""


def bare_subscriber(broker: Broker, topic: str, n: int) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SUBSCRIBER, broker.host, str(broker.port), topic, str(n + 1)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        publish(broker, topic, 1)  # the warm-up message
        time.sleep(0.2)
        started = publish(broker, topic, n, first=1)
        line = proc.stdout.readline().strip()
        assert line.startswith("done"), line
        return n / (float(line.split()[1]) - started)
    finally:
        proc.wait(30)


def seed_rules(buffer: Path, sensor: str) -> None:
    """Two alarm rules cached for the sensor, as the daemon keeps them after a pull: an
    ``above`` and a ``below`` one that the readings (20..21) never meet, the usual case."""
    buf = Buffer(buffer)
    try:
        buf.upsert_sensor(sensor, "t", "mqtt", f"{NIL}a1", f"{NIL}b1")
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        profile = EdgeProfile(version="v1", kind="linear", payload={"a": 1.0}, effective_from=epoch)
        rules = [
            EdgeRule(id=uuid.uuid4(), kind="above", threshold=100.0, hysteresis=1.0),
            EdgeRule(id=uuid.uuid4(), kind="below", threshold=0.0, for_s=5.0),
        ]
        buf.set_rules(
            sensor, EdgeRules(sensor_id=uuid.UUID(sensor), profiles=[profile], rules=rules)
        )
    finally:
        buf.close()


def capture_rules(sizes: Sizes, logs: Path) -> Row:
    """:func:`capture` with alarm rules cached for the sensor (evaluated at each commit)."""
    return capture(sizes, logs, rules=True)


def capture(sizes: Sizes, logs: Path, rules: bool = False) -> Row:
    """Alternate rounds of the bare subscriber and the daemon (which stays up), and take the
    median of each: the publisher and the broker share two cores with the subscriber, so one
    round of either can be off by a third."""
    n = sizes.capture_messages
    sensor = f"{NIL}01"
    topic = f"benchlink/sensors/{sensor}/readings"
    bare: list[float] = []
    edge: list[float] = []
    with private_mosquitto(REPO / "mosquitto" / "mosquitto.conf") as broker:
        tmp = logs / ("capture_rules" if rules else "capture")
        tmp.mkdir(exist_ok=True)
        buffer, config = tmp / "buffer.db", tmp / "edge.toml"
        write_config(
            config,
            buffer,
            f"http://127.0.0.1:{free_port()}",  # nothing listens: this measures capture only
            [
                {
                    "sensor_id": sensor,
                    "token": "t",
                    "run_id": f"{NIL}a1",
                    "capture_session_id": f"{NIL}b1",
                    "source": "mqtt",
                }
            ],
            broker,
        )
        if rules:
            seed_rules(buffer, sensor)
        daemon = Daemon(config, logs / "edge-capture.log")
        try:
            committed = f"SELECT count(*) FROM readings WHERE sensor_id = '{sensor}'"
            # The warm-up message proves the subscription is live before the clock starts.
            deadline = time.monotonic() + 30
            while _count(buffer, committed) < 1:
                publish(broker, topic, 1)
                time.sleep(0.5)
                if time.monotonic() > deadline or daemon.proc.poll() is not None:
                    raise RuntimeError("the edge daemon never committed the warm-up message")
            daemon.rss.reset()
            for _ in range(sizes.capture_rounds):
                # a topic of its own, so no persistent session queues the other side's messages
                bare.append(bare_subscriber(broker, f"bench/bare/{uuid.uuid4().hex}", n))
                before = _count(buffer, committed)
                started: list[float] = []
                pub = threading.Thread(target=_publish_into, args=(started, broker, topic, n))
                pub.start()
                finished = wait_for(
                    lambda: _count(buffer, committed), before + n, 300, daemon.rss, step=0.05
                )
                pub.join()
                edge.append(n / (finished - started[0]))
            rss = daemon.rss.mb
        finally:
            daemon.stop()
    rate, ceiling = statistics.median(edge), statistics.median(bare)
    return Row(
        name="edge_capture_rules" if rules else "edge_capture",
        what=f"edge capture{' with 2 alarm rules' if rules else ''} (MQTT QoS 1 -> buffer),"
        " readings/s",
        figure=rate,
        unit="readings/s",
        ceiling=ceiling,
        ceiling_what="bare paho subscriber, same publisher",
        target=">= 80% of ceiling, RSS < 80 MB",
        passed=rate >= 0.8 * ceiling and rss < 80,
        rss_mb={"edge": rss},
        extra={
            "messages_per_round": n,
            "edge_rounds": [round(x) for x in edge],
            "bare_rounds": [round(x) for x in bare],
        },
    )


# --- sync drain -------------------------------------------------------------------------------


def prefill(buffer: Path, benches: list[Bench], per_sensor: int) -> None:
    """Commit the backlog through the buffer's own group commit, 5000 readings at a time."""
    from edge.buffer import Buffer, NewReading, Write

    buf = Buffer(buffer)
    try:
        for b in benches:
            buf.upsert_sensor(b.sensor_id, b.token, "mqtt", b.run_id, b.capture_session_id)
        base = datetime.now(UTC) - timedelta(hours=1)
        for b in benches:
            for lo in range(0, per_sensor, 5000):
                readings = [
                    NewReading(b.sensor_id, base + timedelta(microseconds=100 * i), 20 + i % 97)
                    for i in range(lo, min(lo + 5000, per_sensor))
                ]
                buf.commit([Write(readings=readings)])
    finally:
        buf.close()


def sync_drain(sizes: Sizes, logs: Path, cloud_ingest: float | None) -> Row:
    per_sensor = sizes.sync_backlog // sizes.sync_sensors
    total = per_sensor * sizes.sync_sensors
    with pg_database() as url, Cloud(url, sizes.cloud_workers, logs / "cloud-sync.log") as cloud:
        benches = [bootstrap(cloud.url) for _ in range(sizes.sync_sensors)]
        for b in benches:  # the backlog is from an hour ago: a session takes no earlier one
            backdate(url, b.capture_session_id, datetime.now(UTC) - timedelta(hours=2))
        tmp = logs / "sync"
        tmp.mkdir(exist_ok=True)
        buffer, config = tmp / "buffer.db", tmp / "edge.toml"
        prefill(buffer, benches, per_sensor)
        write_config(
            config,
            buffer,
            cloud.url,
            [
                {
                    "sensor_id": b.sensor_id,
                    "token": b.token,
                    "run_id": b.run_id,
                    "capture_session_id": b.capture_session_id,
                    "source": "mqtt",
                }
                for b in benches
            ],
        )
        # no [mqtt] broker: the MQTT source retries in the background, harmlessly
        assert cloud.rss is not None
        cloud.rss.reset()
        launched = time.time()
        daemon = Daemon(config, logs / "edge-sync.log")
        try:
            # The drain of a running daemon (as after an outage), not Python's start-up.
            started = daemon.ready()
            machine = MachineCpu()
            finished = wait_for(
                lambda: _count(buffer, "SELECT sum(count) FROM batches WHERE state = 'synced'"),
                total,
                900,
                daemon.rss,
                step=0.1,
            )
            rss = daemon.rss.mb
            edge_cpu = cpu_seconds(daemon.proc.pid)
            busy = machine.busy()
        finally:
            daemon.stop()
        rate = total / (finished - started)
        worker_cpu = cloud.worker_cpu()
        with psycopg.connect(libpq(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM telemetry_readings").fetchone()
        assert stored is not None and stored[0] == total, f"cloud stored {stored} of {total}"
        if cloud_ingest is None:
            from bench.ingest import telemetry_ingest

            cloud_ingest = telemetry_ingest(sizes, logs).figure
        return Row(
            name="sync_drain",
            what=f"edge sync drain ({total:,} backlog), readings/s",
            figure=rate,
            unit="readings/s",
            ceiling=cloud_ingest,
            ceiling_what="cloud ingest figure (row 1)",
            target=">= 80% of ceiling, RSS < 80 MB",
            passed=cloud_ingest is not None and rate >= 0.8 * cloud_ingest and rss < 80,
            rss_mb={"edge": rss, "cloud": cloud.rss.mb},
            extra={
                "sensors": sizes.sync_sensors,
                "seconds": round(finished - started, 1),
                "start_up_s": round(started - launched, 2),
                "worker_cpu_s": worker_cpu,
                "edge_cpu_s": round(edge_cpu, 1),
                "machine_busy_pct": busy,
            },
        )
