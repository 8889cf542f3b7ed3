"""The demo's MQTT side: whether a broker will take its password-less device and edge, the
device that publishes the chamber's readings, and the removal of the edge's broker session."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from demo_children import port_open
from demo_scene import Scene
from demo_signal import Signal


def mqtt_broker(url: str) -> tuple[str | None, str]:
    """The broker's URL if the demo's device and edge (which log in without a password) may
    use it, else None and why not: a broker set up as mosquitto/ is, refuses them."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    if not port_open(host, port, timeout=1.0):
        return None, f"no broker at {url}"
    refused = anonymous_refused(host, port)
    if refused:
        return None, f"the broker at {url} refuses clients without a password ({refused})"
    return url, ""


def anonymous_refused(host: str, port: int, timeout: float = 5.0) -> str | None:
    """The broker's reason for refusing a client without credentials, or None."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answer: list[str | None] = []
    answered = threading.Event()

    def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
        answer.append(str(reason) if reason.is_failure else None)
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-probe-{os.getpid()}")
    client.on_connect = on_connect
    try:
        client.connect(host, port)
        client.loop_start()
        if not answered.wait(timeout):
            return "no answer to CONNECT"
        return answer[0]
    except OSError as exc:
        return str(exc)
    finally:
        client.loop_stop()
        client.disconnect()


def publish_mqtt(scene: Scene, url: str, stop: threading.Event) -> None:
    """A device on the chamber: JSON readings on its own topic, QoS 1, twice a second."""
    publish_readings(scene.seed.sensor("chamber_mqtt").id, url, stop)


def publish_readings(
    sensor_id: str, url: str, stop: threading.Event, period_s: float = 0.5
) -> None:
    """Publish a reading of ``sensor_id`` every ``period_s`` until ``stop``, as a device does:
    the first once the broker let it in (paho refuses a publish before its CONNACK, which a
    busy machine delays past the first reading), and through a broker that goes away: paho
    keeps a QoS 1 message it could not send and sends it once it is back in."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

    topic = f"benchlink/sensors/{sensor_id}/readings"
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-device-{sensor_id[:8]}")
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else connected.set()
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    signal_ = Signal(profile="cycle", noise_c=0.3)
    try:
        if not connected.wait(30):
            raise RuntimeError(f"MQTT: {url} did not let the demo device in within 30 s")
        step, t0 = 0, time.monotonic()
        while not stop.wait(period_s):
            step += 1
            reading = {
                "timestamp": datetime.now(UTC).isoformat(),
                "raw_value": signal_.raw(time.monotonic() - t0),
                "meta": {"step": step},
            }
            info = client.publish(topic, json.dumps(reading), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN:  # else: held until reconnected
                info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def forget_mqtt_session(url: str, client_id: str, timeout: float = 10.0) -> None:
    """End the broker's session of ``client_id`` (clean start, session expiry 0): the demo's
    edge never comes back for it, and a kept session would queue readings for ever."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(
        parts.hostname or "127.0.0.1", parts.port or 1883, clean_start=True, properties=props
    )
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise RuntimeError(f"MQTT: no answer from {url} to remove the demo's session")
    finally:
        client.disconnect()
        client.loop_stop()
