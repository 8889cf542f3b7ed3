"""The demo's MQTT device (bin/demo_mqtt.py) against a real Mosquitto that goes away and comes
back: a device keeps publishing through it, and so must the demo's, or the demo ends with
"mqtt device: Message publish failed" (as it once did in CI, on a publish before the CONNACK)."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.services import restartable_mosquitto

pytestmark = pytest.mark.mqtt


def subscriber(port: int, topic: str, steps: queue.Queue[int]) -> paho.Client:
    """A persistent session (the broker keeps its subscription and queues for it while it is
    away), subscribing again at every connect."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}", clean_session=False
    )
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
    client.on_message = lambda c, u, m: steps.put(json.loads(m.payload)["meta"]["step"])
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def wait_for_step(steps: queue.Queue[int], seen: set[int], step: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while step not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"step {step} never arrived; got {sorted(seen)}"
        try:
            seen.add(steps.get(timeout=remaining))
        except queue.Empty:
            continue


def test_the_demo_device_publishes_through_a_broker_restart(tmp_path: Path) -> None:
    import demo_mqtt

    sensor = str(uuid.uuid4())
    steps: queue.Queue[int] = queue.Queue()
    seen: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()
    (tmp_path / "mosq").mkdir()
    with restartable_mosquitto(tmp_path / "mosq") as broker:
        sub = subscriber(broker.port, f"benchlink/sensors/{sensor}/readings", steps)
        time.sleep(0.5)  # subscribed before the first reading

        def device() -> Any:
            try:
                demo_mqtt.publish_readings(sensor, f"mqtt://127.0.0.1:{broker.port}", stop, 0.2)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=device, daemon=True)
        thread.start()
        try:
            wait_for_step(steps, seen, 3, timeout=30)
            broker.stop()
            time.sleep(1.5)  # readings published while no broker listens
            assert thread.is_alive(), errors
            broker.start()
            last_before = max(seen)
            wait_for_step(steps, seen, last_before + 10, timeout=60)
        finally:
            stop.set()
            thread.join(timeout=30)
            sub.loop_stop()
            sub.disconnect()
    assert not errors, errors
    # Nothing lost: the readings made while the broker was down arrived once it was back.
    assert set(range(1, max(seen) + 1)) <= seen
