"""MQTT end to end: Mosquitto -> the daemon (a real subprocess) -> the real cloud app."""

from __future__ import annotations

import collections
import contextlib
import json
import random
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.edge.helpers import Bound, EdgeProcess, RealCloud, running, wait_for, write_config
from tests.support.mqtt import Publisher
from tests.support.services import Broker, free_port

pytestmark = pytest.mark.mqtt


def mqtt_sensor(b: Bound, **extra: Any) -> dict[str, Any]:
    return {
        "sensor_id": b.sensor_id,
        "token": b.token,
        "run_id": b.run_id,
        "capture_session_id": b.session_id,
        "source": "mqtt",
        **extra,
    }


def topic(b: Bound) -> str:
    return f"benchlink/sensors/{b.sensor_id}/readings"


def connected(edge: EdgeProcess, times: int = 1) -> bool:
    return edge.log.read_text().count("MQTT: connected") >= times


def test_mqtt_readings_arrive_converted_and_poison_is_dead_lettered(
    mosquitto: Broker, cloud: RealCloud, tmp_path: Path
) -> None:
    a, b = cloud.bootstrap(2)
    custom = f"{mosquitto.topic_prefix}/custom"
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        sensors=[mqtt_sensor(a), mqtt_sensor(b, topic=custom)],
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    with running(edge):
        wait_for(lambda: connected(edge), 20, "the MQTT subscription")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            poison = [
                (topic(a), b"{not json"),
                (topic(a), b"NaN"),
                (topic(a), b'{"timestamp": "2026-01-01T00:00:00", "raw_value": 1}'),
                (f"benchlink/sensors/{uuid.uuid4()}/readings", b"1.0"),
            ]
            good = [
                (topic(a), b"1.5"),
                (topic(a), json.dumps({"raw_value": 2.5, "meta": {"seq": 2}}).encode()),
                (custom, json.dumps([{"value": 3.0}, 4.0]).encode()),
            ]
            for t, payload in poison[:2] + good[:1] + poison[2:] + good[1:]:
                assert pub.publish(t, payload)
        finally:
            pub.close()
        wait_for(lambda: len(cloud.telemetry(a)) == 2 and len(cloud.telemetry(b)) == 2, 30, "sync")
        status = json.loads(edge.cli("status", "--json").stdout)
        dead = edge.cli("dead-letter", "list").stdout
    ra = sorted((i["raw_value"], i["value"]) for i in cloud.telemetry(a))
    rb = sorted((i["raw_value"], i["value"]) for i in cloud.telemetry(b))
    assert ra == [(1.5, 4.0), (2.5, 6.0)]  # linear a=2, b=1
    assert rb == [(3.0, 7.0), (4.0, 9.0)]
    assert status["dead_letters"] == 4
    assert status["sensors"][a.sensor_id]["synced"] == 2
    for reason in ("not JSON", "non-finite", "timezone", "unknown sensor"):
        assert reason in dead, dead


def test_kill9_during_capture_and_sync_keeps_every_acked_message_exactly_once(
    mosquitto: Broker, cloud: RealCloud, tmp_path: Path
) -> None:
    (a,) = cloud.bootstrap(1)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        sensors=[mqtt_sensor(a)],
        interval_s=0.1,
        batch_size=20,
        client_id="edge-kill9",
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    acked: list[int] = []
    total = 1500
    stop = threading.Event()

    def publish_all() -> None:
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            for seq in range(total):
                if stop.is_set():
                    return
                payload = json.dumps({"raw_value": seq, "meta": {"seq": seq}})
                if pub.publish(topic(a), payload):
                    acked.append(seq)
                time.sleep(0.001)
        finally:
            pub.close()

    rng = random.Random()
    with running(edge):
        wait_for(lambda: connected(edge), 20, "the first MQTT subscription")
        publisher = threading.Thread(target=publish_all)
        publisher.start()
        try:
            for kill in range(6):
                time.sleep(rng.uniform(0.2, 0.9))
                edge.kill9()
                edge.start()
                wait_for(lambda k=kill: connected(edge, k + 2), 20, "reconnect")
        finally:
            stop.set() if not publisher.is_alive() else None
            publisher.join(120)
        assert len(acked) == total
        wait_for(lambda: len(cloud.telemetry(a)) >= total, 60, "everything in the cloud")
        time.sleep(0.5)  # a late duplicate would show up now
    seqs = collections.Counter(int(i["meta"]["seq"]) for i in cloud.telemetry(a))
    doubled = {s: n for s, n in seqs.items() if n > 1}
    missing = set(acked) - set(seqs)
    assert not doubled and not missing, (len(doubled), sorted(missing)[:20])
    assert edge.log.read_text().count("MQTT: connected") >= 7


def test_a_backlog_in_bursts_with_big_messages_is_stored_in_order_and_acked_once(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """The daemon reads many packets per socket read and hands a whole burst to the writer:
    a backlog queued while it was down (small messages, messages larger than one read, poison)
    arrives in publish order, each once, and every message is acknowledged -- a restart gets
    nothing re-delivered."""
    sensor = str(uuid.uuid4())
    b = Bound(sensor, "t", str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), {})
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: capture only
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        sensors=[mqtt_sensor(b)],
        client_id="edge-bursts",
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    with running(edge):  # the persistent session and its subscription exist from now on
        wait_for(lambda: connected(edge), 20, "the MQTT subscription")
    big = "x" * 150_000  # more than one socket read (READ_CHUNK)
    total, bigs, poison = 3000, {0, 1234, 2999}, {7, 1500}
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        for seq in range(total):
            if seq in poison:
                payload = b"{not json"
            else:
                meta: dict[str, Any] = {"seq": seq, **({"big": big} if seq in bigs else {})}
                payload = json.dumps({"raw_value": seq, "meta": meta}).encode()
            assert pub.publish(topic(b), payload)
    finally:
        pub.close()
    buffer = tmp_path / "buffer.db"

    def stored() -> list[tuple[float, str]]:
        with contextlib.closing(sqlite3.connect(buffer)) as conn:
            return conn.execute("SELECT raw_value, meta FROM readings ORDER BY id").fetchall()

    with running(edge):
        wait_for(lambda: len(stored()) >= total - len(poison), 60, "the backlog in the buffer")
    rows = stored()
    assert [int(v) for v, _ in rows] == [s for s in range(total) if s not in poison]
    assert all((json.loads(m).get("big") == big) == (int(v) in bigs) for v, m in rows)
    with running(edge):  # everything was acked: nothing comes back
        wait_for(lambda: connected(edge, 3), 20, "the reconnect")
        time.sleep(1.0)
    assert len(stored()) == len(rows)
    assert "re-delivered" not in edge.log.read_text()
    dead = edge.cli("dead-letter", "list").stdout
    assert dead.count("not JSON") == len(poison), dead
