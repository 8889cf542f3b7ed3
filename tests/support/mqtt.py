"""A real MQTT client for tests: a device (or a tool) that connects to a broker and publishes."""

from __future__ import annotations

import queue
import uuid
from types import TracebackType

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    """A paho client, connected (its CONNACK received: paho refuses a publish before it, and on
    a busy machine the first publish came before it), that remembers which messages the broker
    acknowledged (PUBACK). ``rc``: the CONNACK's reason code, 0 when the broker let it in."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        v5: bool = False,
        client_id: str | None = None,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        )
        self.client.max_inflight_messages_set(100)
        if username:
            self.client.username_pw_set(username, password)
        answered: queue.Queue[int] = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: answered.put(rc.value)
        self.client.connect(host, port)
        self.client.loop_start()
        try:
            self.rc = answered.get(timeout=20)
        except queue.Empty:
            self.close()
            raise AssertionError("the test publisher got no CONNACK") from None

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> bool:
        """Publish at QoS 1; whether the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
