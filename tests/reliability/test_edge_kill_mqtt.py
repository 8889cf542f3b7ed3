"""kill -9 of the edge during MQTT capture: every message the broker acknowledged to the device
is stored in the cloud exactly once.

A device publishes at QoS 1 at a steady rate into a private Mosquitto (persistence on) while
the real daemon captures and syncs to the real cloud. The daemon is killed with SIGKILL at
seeded random moments -- while it takes the broker's backlog just after a reconnect, between a
commit and its PUBACK, inside a sync -- and stays down a random while, during which the device
goes on publishing, then starts again. What each kill leaves:

- messages the daemon committed but had not acknowledged come back from the broker flagged
  DUP (its persistent session) and are dropped as copies (docs/edge.md, "Messages the broker
  sends again");
- messages it had received but not committed are not acknowledged either: they come back too,
  and are stored then;
- messages the broker had not delivered yet (queued for the session while the daemon was
  down, or beyond its in-flight window) are delivered after the reconnect, once;
- a batch sent to the cloud whose answer the kill swallowed is sent again with its key.

Messages alternate between two sensors: one sends bare numbers (stamped by the edge: only the
DUP flag tells a copy), the other readings with the device's own timestamp (two sensors, so an
edge's stamp can never meet a device's: the cloud keeps one reading per sensor and timestamp).
Every value is distinct, so the cloud's rows are counted value by value.
"""

from __future__ import annotations

import collections
import json
import random
import time
import uuid
from collections.abc import Hashable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.edge.helpers import EdgeProcess, wait_for, write_config
from tests.live.helpers import register_sensor
from tests.reliability.conftest import Figures, scale
from tests.reliability.device import PacedDevice
from tests.reliability.helpers import cloud_metrics
from tests.support.cloud import Bench, CloudServer, bootstrap
from tests.support.services import RestartableMosquitto, restartable_mosquitto

pytestmark = pytest.mark.mqtt

RATE = 300  # messages per second from the device


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudServer]:
    c = CloudServer(f"sqlite:///{tmp_path / 'cloud.db'}", log_path=tmp_path / "cloud.log")
    c.start(timeout=120)  # a loaded machine took more than the default 30 s
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RestartableMosquitto]:
    (tmp_path / "mosq").mkdir()
    with restartable_mosquitto(tmp_path / "mosq") as b:
        yield b


def payload(seq: int) -> bytes:
    if seq % 2:
        return str(seq).encode()  # bare: the edge stamps it on arrival
    return json.dumps({"timestamp": datetime.now(UTC).isoformat(), "raw_value": seq}).encode()


def stored_values(database_url: str, sensor_ids: list[str]) -> collections.Counter[float]:
    """How many rows the cloud holds of each value (read from its database, not the API)."""
    from cloud.db.engine import make_engine
    from cloud.db.models import TelemetryReading as R

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(R.raw_value).where(R.sensor_id.in_([uuid.UUID(s) for s in sensor_ids]))
            ).all()
    finally:
        engine.dispose()
    return collections.Counter(raw for (raw,) in rows)


def connections(edge: EdgeProcess) -> int:
    return edge.log.read_text().count("MQTT: connected") if edge.log.exists() else 0


def edge_config(
    tmp_path: Path, bench: Bench, sensors: list[tuple[str, str]], broker: RestartableMosquitto
) -> Path:
    return write_config(
        tmp_path / "edge.toml",
        cloud_url=bench.base_url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=broker.broker.url,
        client_id=f"edge-kill-{uuid.uuid4().hex[:6]}",
        interval_s=0.2,
        batch_size=50,
        sensors=[
            {
                "sensor_id": sensor_id,
                "token": token,
                "run_id": bench.run_id,
                "capture_session_id": bench.capture_session_id,
                "source": "mqtt",
            }
            for sensor_id, token in sensors
        ],
    )


def kill_and_restart(edge: EdgeProcess, rng: random.Random, kills: int) -> float:
    """One kill at a random moment of the daemon's life; the seconds it stayed down."""
    # Often early in a life (the backlog queued while it was down is being taken, a thousand
    # messages in flight), sometimes after it caught up.
    time.sleep(rng.choice((rng.uniform(0.0, 0.3), rng.uniform(0.3, 2.0))))
    edge.kill9()
    down = rng.uniform(0.0, 1.5)
    time.sleep(down)  # the device goes on publishing: the broker queues for the session
    edge.start()
    wait_for(lambda: connections(edge) >= kills + 1, 60, "the daemon reconnected")
    return down


def test_kill9_of_the_edge_during_mqtt_capture_stores_every_acked_message_once(
    cloud: CloudServer,
    broker: RestartableMosquitto,
    tmp_path: Path,
    rng: random.Random,
    figures: Figures,
    seed_note: str,
) -> None:
    bench = bootstrap(cloud.url)
    sensors = [(bench.sensor_id, bench.token), register_sensor(bench)]
    ids = [s for s, _ in sensors]
    topics = [f"benchlink/sensors/{s}/readings" for s in ids]
    edge = EdgeProcess(edge_config(tmp_path, bench, sensors, broker), tmp_path / "edge.log")
    kills = int(scale(4, 30))
    downtime = 0.0

    def message(k: int) -> tuple[str, bytes, Hashable]:
        return topics[k % 2], payload(k), float(k)

    edge.start()
    try:
        # the persistent session exists from the first subscription on: publish after it
        wait_for(lambda: connections(edge) >= 1, 60, "the MQTT subscription")
        device = PacedDevice(broker.broker.host, broker.port, RATE, message).start()
        try:
            for n in range(kills):
                downtime += kill_and_restart(edge, rng, n + 1)
            time.sleep(0.5)
        finally:
            acked = device.stop()
        published = device.published
        wait_for(
            lambda: sum(stored_values(cloud.database_url, ids).values()) >= len(acked),
            scale(120, 300),
            f"every acknowledged message in the cloud ({seed_note})",
        )
        time.sleep(1.0)  # a late copy would arrive now
        status = json.loads(edge.cli("status", "--json").stdout)
        edge.terminate()
    finally:
        if edge.proc is not None:
            edge.kill9()
    stored = stored_values(cloud.database_url, ids)
    log = edge.log.read_text()
    dropped = log.count("dropped a re-delivered copy")
    lost = sum(1 for key in acked if stored[key] == 0)
    doubled = sum(n - 1 for n in stored.values() if n > 1)
    foreign = sum(1 for v in stored if not (v.is_integer() and 0 <= v < published))
    assert len(acked) == published, f"the broker acknowledged {len(acked)} of {published}"
    assert (lost, doubled, foreign) == (0, 0, 0), (
        f"{len(acked)} acknowledged: {lost} lost, {doubled} stored more than once,"
        f" {foreign} foreign ({seed_note})"
    )
    assert status["dead_letters"] == 0, status
    assert "MQTT source failed" not in log and "unexpected" not in log, log[-3000:]
    assert connections(edge) >= kills + 1
    counters = cloud_metrics(cloud.url)
    assert counters["http_5xx"] == 0, counters["lines_5xx"]
    figures.record(
        "processes",
        f"kill -9 of the edge during MQTT capture at {RATE} messages/s",
        faults={"kill -9 (MQTT capture)": kills},
        readings=len(acked),
        lost=lost,
        doubled=doubled,
        http_5xx=int(counters["http_5xx"]),
        copies_dropped=dropped,
        seconds_down=round(downtime, 1),
    )
