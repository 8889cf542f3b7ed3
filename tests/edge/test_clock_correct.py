"""``[clock] correct``: an edge whose clock is off (a shifted time source in the daemon, not
the machine's clock) stamps its serial readings by the cloud's clock as it estimates it, each
saying by how much it moved them; MQTT devices that stamp their own readings have their skew
in the heartbeat."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.buffer import Buffer
from edge.config import MqttConfig, load_config
from edge.daemon import Daemon
from edge.heartbeat import device_skews
from edge.metrics import EdgeMetrics
from edge.sources import mqtt as mqtt_module
from edge.sources.mqtt import MqttSource
from edge.writer import Writer
from tests.edge.helpers import EdgeProcess, RealCloud, running, wait_for, write_config
from tests.edge.test_fleet import edge_in_cloud, edge_section, register_edge
from tests.edge.test_integration_mqtt import connected, mqtt_sensor
from tests.edge.test_integration_mqtt import topic as mqtt_topic
from tests.edge.test_mqtt_source import sensor_config, topic
from tests.edge.test_serial import Pty
from tests.support.mqtt import Publisher
from tests.support.services import Broker

SHIFT_S = -42.0  # the edge's clock is 42 s behind


@pytest.mark.parametrize("correct", [True, False])
def test_serial_readings_are_stamped_by_the_cloud_clock_with_correct(
    cloud: RealCloud, tmp_path: Path, correct: bool
) -> None:
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    pty = Pty(tmp_path / "ttyCLK")
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        sensors=[
            {
                "sensor_id": a.sensor_id,
                "token": a.token,
                "run_id": a.run_id,
                "capture_session_id": a.session_id,
                "source": "serial",
                "port": str(pty.link),
                "baudrate": 115200,
                "protocol": "value",
            }
        ],
        extra=edge_section(edge_id, token, heartbeat_s=0.2, min_interval_s=0)
        + f"[clock]\ncorrect = {str(correct).lower()}\n",
    )
    daemon = Daemon(load_config(cfg), time_source=lambda: time.time() + SHIFT_S)
    written: list[float] = []

    async def main() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            for _ in range(600):  # an estimate first (the first beat's samples), then lines
                beats = daemon.heartbeats
                if beats is not None and beats.sent >= 2 and _port_open(daemon):
                    break
                await asyncio.sleep(0.05)
            for i in range(5):
                written.append(time.time())
                pty.write(f"{i}.25\n".encode())
                await asyncio.sleep(0.05)
            for _ in range(1200):
                if len(await asyncio.to_thread(cloud.telemetry, a)) >= 5:
                    break
                await asyncio.sleep(0.05)
        finally:
            daemon.stop()
            await task

    try:
        asyncio.run(main())
    finally:
        pty.close()
    assert daemon.heartbeats is not None
    estimate = daemon.heartbeats.clock.estimate()
    assert estimate is not None
    # The cloud's clock minus the edge's: minus the shift, within 20 ms.
    assert abs(estimate.offset_ms + SHIFT_S * 1000) < 20, estimate
    readings = cloud.telemetry(a)
    assert [r["raw_value"] for r in readings] == [0.25, 1.25, 2.25, 3.25, 4.25]
    seen = time.time()
    for r, before in zip(readings, written, strict=True):
        ts = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
        meta = r.get("meta") or {}
        if correct:
            # By the cloud's clock: not before the line was written, not after it was seen
            # (20 ms: the estimate's own error), and the record says by how much it moved.
            assert before - 0.02 <= ts <= seen + 0.02, (ts, before, seen)
            assert abs(meta["clock_offset_ms"] + SHIFT_S * 1000) < 20, meta
        else:
            assert before + SHIFT_S - 0.02 <= ts <= seen + SHIFT_S + 0.02, (ts, before)
            assert "clock_offset_ms" not in meta


def _port_open(daemon: Daemon) -> bool:
    return any(getattr(s, "state", "") == "open" for s in daemon.sources.values())


def test_a_device_stamping_its_own_readings_has_its_skew_measured(buffer: Buffer) -> None:
    """The device's timestamp minus the arrival by the edge's clock; readings the edge
    stamps itself (no timestamp in the payload) are not a device's skew."""
    sid, bare = str(uuid.uuid4()), str(uuid.uuid4())
    metrics = EdgeMetrics()
    src = MqttSource(
        MqttConfig(), [sensor_config(sid), sensor_config(bare)], Writer(buffer, metrics), metrics
    )
    arrival = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)
    src.now = arrival.timestamp
    stamps = [arrival - timedelta(seconds=s) for s in (2.5, 2.0, 3.0)]

    def payload(ts: datetime) -> bytes:
        return json.dumps({"timestamp": ts.isoformat(), "value": 1.0}).encode()

    burst = [mqtt_module.Delivered(topic(sid), payload(t), 1, i + 1) for i, t in enumerate(stamps)]
    burst.append(mqtt_module.Delivered(topic(bare), b"7.5", 1, 9))
    writes = src.arrivals(burst)
    assert all(w.readings for w in writes)
    # The median of the three: 2.5 s behind the arrival (the burst's arrival is one instant).
    assert src.device_skew_ms() == {sid: -2500.0}
    assert device_skews({"mqtt": src, "other": object()}) == {sid: -2500.0}


@pytest.mark.mqtt
def test_the_heartbeat_carries_a_device_stamping_sensors_skew(
    mosquitto: Broker, cloud: RealCloud, tmp_path: Path
) -> None:
    """A device whose clock is 90 s behind the edge's: the heartbeat the cloud keeps says so
    (minus however long the message took to arrive)."""
    (a,) = cloud.bootstrap(1)
    edge_id, token = register_edge(cloud, a)
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=cloud.url,
        buffer=tmp_path / "buffer.db",
        mqtt_url=mosquitto.url,
        sensors=[mqtt_sensor(a)],
        extra=edge_section(edge_id, token, heartbeat_s=0.5, min_interval_s=0),
    )
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        with running(edge):
            wait_for(lambda: connected(edge), 20, "the MQTT subscription")
            sent = time.time()
            device = datetime.fromtimestamp(sent - 90, UTC).isoformat()
            assert pub.publish(
                mqtt_topic(a), json.dumps({"timestamp": device, "value": 1}).encode()
            )

            def skew() -> float | None:
                hb = edge_in_cloud(cloud, a, edge_id)["heartbeat"]
                value = hb and hb["sensors"].get(a.sensor_id, {}).get("device_skew_ms")
                return float(value) if value is not None else None

            wait_for(lambda: skew() is not None, 30, "a heartbeat with the skew")
            got = skew()
            received = time.time()
            # device time - arrival: between -90 s - (the trip) and -90 s
            assert got is not None and -90_000 - (received - sent) * 1000 <= got <= -90_000
    finally:
        pub.close()
