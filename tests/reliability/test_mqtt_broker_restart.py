"""Mosquitto restarted under a capture: every reading stored in the edge's buffer exactly once.

The daemon (a real subprocess) captures from a private Mosquitto with persistence on, which the
test restarts in the middle of the capture, several times:

- gracefully (SIGTERM: Mosquitto saves its state on the way out). PUBACKs the daemon had
  written but the broker had not processed yet come back as re-deliveries flagged DUP;
- with kill -9 after a save (what an autosave does): the broker comes back with the state of
  that save, so every message the daemon took and acked after it is sent again -- those that
  were in flight at the save flagged DUP, those still queued at the save NOT flagged.

Each round a device publishes a chunk of distinct readings (every one acknowledged by the
broker before the restart: its own re-sends are not what is measured here), the daemon starts
taking them, and the broker restarts with part of the chunk taken. A last message published
after the last restart comes after every re-delivery (the broker sends a session's queue in
order), so once it is stored nothing more can come back.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.edge.helpers import EdgeProcess, running, unbound_sensor, wait_for, write_config
from tests.reliability.conftest import Figures, scale
from tests.support.services import RestartableMosquitto, free_port, restartable_mosquitto

pytestmark = pytest.mark.mqtt

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def bare(seq: int) -> bytes:
    """A bare number: the edge stamps it with its arrival."""
    return str(seq).encode()


def stamped(seq: int) -> bytes:
    """A reading with the device's own timestamp."""
    ts = EPOCH + timedelta(milliseconds=seq)
    return json.dumps({"timestamp": ts.isoformat(), "raw_value": seq}).encode()


def publish_all(broker: RestartableMosquitto, topic: str, payloads: list[bytes]) -> None:
    """Publish at QoS 1 and return once the broker acknowledged every message."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.connect(broker.broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published(), "the broker did not acknowledge a message"
    finally:
        client.disconnect()
        client.loop_stop()


def stored_values(buffer: Path) -> list[float]:
    if not buffer.exists():
        return []
    with contextlib.closing(sqlite3.connect(buffer, timeout=30)) as c:
        try:
            return [r[0] for r in c.execute("SELECT raw_value FROM readings")]
        except sqlite3.OperationalError:  # not created yet
            return []


def stored_count(buffer: Path) -> int:
    if not buffer.exists():
        return 0
    with contextlib.closing(sqlite3.connect(buffer, timeout=30)) as c:
        try:
            return int(c.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def connections(edge: EdgeProcess) -> int:
    return edge.log.read_text().count("MQTT: connected") if edge.log.exists() else 0


def capture_with_restarts(
    tmp_path: Path,
    rng: random.Random,
    *,
    kill9: bool,
    payload: Callable[[int], bytes],
    rounds: int,
    chunk: int,
) -> tuple[collections.Counter[float], int, int]:
    """Run the capture; (how many times each published value was stored, values published,
    copies the daemon dropped)."""
    buffer = tmp_path / "buffer.db"
    sensor = str(uuid.uuid4())
    topic = f"benchlink/sensors/{sensor}/readings"
    (tmp_path / "mosq").mkdir()
    with restartable_mosquitto(tmp_path / "mosq") as broker:
        cfg = write_config(
            tmp_path / "edge.toml",
            cloud_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: capture only
            buffer=buffer,
            mqtt_url=broker.broker.url,
            sensors=[unbound_sensor(sensor, "mqtt")],
            client_id=f"edge-restart-{uuid.uuid4().hex[:6]}",
        )
        edge = EdgeProcess(cfg, tmp_path / "edge.log")
        published = 0
        with running(edge):
            wait_for(lambda: connections(edge) >= 1, 30, "the MQTT subscription")
            for n in range(rounds):
                before = stored_count(buffer)
                publish_all(
                    broker, topic, [payload(s) for s in range(published, published + chunk)]
                )
                published += chunk
                if kill9:
                    # the state the broker will come back with: part of the chunk in flight
                    # to the daemon, the rest queued
                    broker.save()
                # restart with part of the chunk taken -- for kill -9, more than one in-flight
                # window of it, so messages queued at the save were acked after it
                low = 1200 if kill9 else chunk // 10
                target = before + rng.randint(low, chunk * 3 // 4)
                deadline = time.monotonic() + 120
                while stored_count(buffer) < target and time.monotonic() < deadline:
                    time.sleep(0.002)
                if kill9:
                    broker.kill9()
                    broker.start()
                else:
                    broker.restart()
                wait_for(lambda n=n: connections(edge) >= n + 2, 60, "the daemon reconnected")
            # after every re-delivery of the session's queue: once it is stored, all are in
            publish_all(broker, topic, [payload(published)])
            published += 1
            wait_for(lambda: published - 1 in stored_values(buffer), 180, "the last message")
        counts = collections.Counter(stored_values(buffer))
        log = edge.log.read_text()
        dropped = log.count("dropped a re-delivered copy")
    # a broker restart is a lost connection, reconnected -- not an unexpected failure
    assert "MQTT source failed" not in log and "unexpected" not in log, log[-3000:]
    return counts, published, dropped


def tally(counts: collections.Counter[float], published: int) -> tuple[int, int, int]:
    """(stored more than once, lost, foreign)"""
    doubled = sum(n - 1 for n in counts.values() if n > 1)
    lost = sum(1 for s in range(published) if counts[float(s)] == 0)
    foreign = sum(1 for v in counts if not (0 <= v < published))
    return doubled, lost, foreign


def check(counts: collections.Counter[float], published: int) -> None:
    doubled, lost, foreign = tally(counts, published)
    assert (doubled, lost, foreign) == (0, 0, 0), (
        f"{published} readings published: {doubled} stored more than once, {lost} lost,"
        f" {foreign} foreign"
    )


def test_graceful_broker_restarts_store_every_reading_once(
    tmp_path: Path, rng: random.Random, figures: Figures
) -> None:
    """Bare numbers (no timestamp of their own): only the packet id tells a copy."""
    rounds, chunk = int(scale(4, 10)), int(scale(3000, 5000))
    counts, published, dropped = capture_with_restarts(
        tmp_path, rng, kill9=False, payload=bare, rounds=rounds, chunk=chunk
    )
    check(counts, published)
    figures.record(
        "mqtt_broker_restart",
        "graceful",
        faults={"mosquitto SIGTERM": rounds},
        readings=published,
        lost=0,
        doubled=0,
        copies_dropped=dropped,
    )


def test_kill9_broker_restarts_store_every_stamped_reading_once(
    tmp_path: Path, rng: random.Random, figures: Figures
) -> None:
    """Readings with the device's own timestamp: a copy sent again without DUP is told by its
    content (see edge.buffer.inbox)."""
    rounds, chunk = int(scale(4, 10)), int(scale(3000, 5000))
    counts, published, dropped = capture_with_restarts(
        tmp_path, rng, kill9=True, payload=stamped, rounds=rounds, chunk=chunk
    )
    check(counts, published)
    figures.record(
        "mqtt_broker_restart",
        "kill9",
        faults={"mosquitto kill -9": rounds},
        readings=published,
        lost=0,
        doubled=0,
        copies_dropped=dropped,
    )


def test_kill9_broker_restarts_never_drop_a_bare_number(
    tmp_path: Path, rng: random.Random, figures: Figures
) -> None:
    """Where the guarantee ends: bare numbers carry nothing that tells a copy sent again without
    DUP (queued at the broker's save, taken after it) from a new reading of the same value, so
    those copies are stored twice -- and no reading is ever dropped. The in-flight ones at the
    save come back with DUP and are dropped."""
    rounds, chunk = int(scale(4, 10)), int(scale(3000, 5000))
    counts, published, dropped = capture_with_restarts(
        tmp_path, rng, kill9=True, payload=bare, rounds=rounds, chunk=chunk
    )
    doubled, lost, foreign = tally(counts, published)
    assert (lost, foreign) == (0, 0), f"{lost} of {published} lost, {foreign} foreign"
    assert dropped > 0  # the DUP-flagged copies were told
    figures.record(
        "mqtt_broker_restart",
        "kill9_bare",
        faults={"mosquitto kill -9": rounds},
        readings=published,
        lost=0,
        copies_dropped=dropped,
        stored_twice_not_promised=doubled,
    )
