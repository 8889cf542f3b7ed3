"""A device that publishes at a steady rate at QoS 1, in its own thread, and remembers which
messages the broker acknowledged (PUBACK): those are what the edge must store exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Hashable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

#: message k -> (topic, payload, what identifies its reading at the cloud)
Message = Callable[[int], tuple[str, bytes, Hashable]]


class PacedDevice:
    """Publishes ``message(0)``, ``message(1)``, ... at ``rate`` per second until :meth:`stop`.

    The messages are not waited for one by one (a device does not): paho keeps up to 1000 in
    flight and the acknowledgements are collected at the end, so a slow broker or edge never
    slows the device down -- the broker queues, as in the field."""

    def __init__(self, host: str, port: int, rate: float, message: Message) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"device-{uuid.uuid4().hex[:8]}"
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)  # never drop one on the device's side
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        # paho refuses a publish before the CONNACK (a busy machine was slower than the first)
        if not connected.wait(20):
            self.client.loop_stop()
            raise AssertionError("the device got no CONNACK")
        self.rate, self.message = rate, message
        self.sent: list[tuple[Hashable, paho.MQTTMessageInfo]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-device", daemon=True)

    def start(self) -> PacedDevice:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        k = 0
        while not self._stop.is_set():
            due = started + k / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            topic, payload, key = self.message(k)
            self.sent.append((key, self.client.publish(topic, payload, qos=1)))
            k += 1

    def stop(self, timeout: float = 120.0) -> list[Hashable]:
        """Stop publishing; the keys of every message the broker acknowledged, in order."""
        self._stop.set()
        self._thread.join(10)
        deadline = time.monotonic() + timeout
        for _, info in self.sent:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()
        return [key for key, info in self.sent if info.is_published()]

    @property
    def published(self) -> int:
        return len(self.sent)
