"""MQTT source: QoS 1 on a persistent session, acknowledged only after the SQLite commit.

The client id is fixed and the session persistent (``clean_session=False``), so the broker keeps
what arrives while the daemon is down and re-delivers every message that was not acknowledged.
Acks are manual (paho's ``manual_ack``; aiomqtt 2.5 has no switch for it, so the underlying
paho client is set directly): a message is acked after its readings are committed, in the
order the messages arrived (MQTT 3.1.1 §4.6).

A crash between the commit and the PUBACK makes the broker re-deliver the message with the DUP
flag; the buffer records (packet id, digest of topic+payload) in the commit's transaction and
drops a DUP message that matches, so the reading is stored once. aiomqtt drops the DUP flag, so
a small subclass keeps it.

Malformed payloads, naive timestamps, non-finite values and unknown sensors are dead-lettered
with the reason and acked: the pipeline never stalls on a poison message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
import paho.mqtt.client as paho
from pydantic import ValidationError

from common.wire import Reading
from edge.backoff import Backoff
from edge.buffer import BufferFull, DeadLetter, NewReading, Write, WriteResult, message_digest
from edge.config import DEFAULT_TOPIC, MqttConfig, SensorConfig
from edge.metrics import EdgeMetrics
from edge.writer import Writer

log = logging.getLogger("benchlink.edge.mqtt")

WILDCARD_TOPIC = DEFAULT_TOPIC.format(sensor_id="+")


class PayloadError(ValueError):
    pass


def parse_payload(payload: bytes, sensor_id: str, now: datetime) -> list[NewReading]:
    """A JSON reading, a JSON list of readings, or a bare number -> readings (or PayloadError)."""
    if payload[:1] == b"{":
        # Fast path for the usual device payload, one complete reading: pydantic parses and
        # validates it in one pass. Anything else it refuses takes the general path below,
        # which also gives the precise reason.
        try:
            reading = Reading.model_validate_json(payload)
        except ValidationError:
            pass
        else:
            return [NewReading(sensor_id, reading.timestamp, reading.raw_value, reading.meta)]
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PayloadError("empty list")
    return [_one(item, i, sensor_id, now) for i, item in enumerate(items)]


def _one(item: Any, index: int, sensor_id: str, now: datetime) -> NewReading:
    where = f"[{index}] " if index else ""
    if isinstance(item, bool) or not isinstance(item, int | float | dict):
        raise PayloadError(f"{where}a reading is an object or a number, not {type(item).__name__}")
    if not isinstance(item, dict):
        item = {"raw_value": item}
    item = dict(item)
    if "value" in item and "raw_value" not in item:
        item["raw_value"] = item.pop("value")
    item.setdefault("timestamp", now.isoformat())
    raw = item.get("raw_value")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise PayloadError(f"{where}raw_value: non-finite number {raw}")
    try:
        reading = Reading.model_validate(item)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise PayloadError(f"{where}{reasons}") from None
    return NewReading(sensor_id, reading.timestamp, reading.raw_value, reading.meta)


class _Delivered(aiomqtt.Message):
    dup: bool = False


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the DUP flag that its Message drops."""

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        m = _Delivered(
            message.topic, bytes(message.payload), message.qos, message.retain, message.mid, None
        )
        m.dup = bool(message.dup)
        self._queue.put_nowait(m)

    def arrived(self, first: aiomqtt.Message) -> Iterator[aiomqtt.Message]:
        """``first`` and every message already queued behind it, in arrival order."""
        yield first
        while not self._queue.empty():
            yield self._queue.get_nowait()

    def ack(self, message: aiomqtt.Message) -> None:
        self._client.ack(message.mid, message.qos)


class MqttSource:
    def __init__(
        self,
        cfg: MqttConfig,
        sensors: Sequence[SensorConfig],
        writer: Writer,
        metrics: EdgeMetrics,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.cfg, self.writer, self.metrics = cfg, writer, metrics
        self.sensors = {str(s.sensor_id): s for s in sensors if s.source == "mqtt"}
        self.custom = {s.mqtt_topic: sid for sid, s in self.sensors.items() if s.topic}
        self.backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.state: Literal["disconnected", "connected", "backoff", "stopped"] = "disconnected"
        self.acked = 0
        self.dead_lettered = 0
        self.duplicates = 0
        # topic -> sensor id; the sensors are fixed for the daemon's life, the topics few
        self._routes: dict[str, str | None] = {}

    def topics(self) -> list[str]:
        return [WILDCARD_TOPIC, *sorted(self.custom)]

    def sensor_for(self, topic: aiomqtt.Topic) -> str | None:
        try:
            return self._routes[topic.value]
        except KeyError:
            pass
        sensor_id = self._route(topic)
        if len(self._routes) < 10_000:  # a flood of stray topics must not grow it forever
            self._routes[topic.value] = sensor_id
        return sensor_id

    def _route(self, topic: aiomqtt.Topic) -> str | None:
        for pattern, sid in self.custom.items():
            if topic.matches(pattern):
                return sid
        if topic.matches(WILDCARD_TOPIC):
            candidate = topic.value.split("/")[2]
            s = self.sensors.get(candidate)
            if s is not None and s.topic is None:
                return candidate
        return None

    def to_write(self, message: aiomqtt.Message, now: datetime) -> Write:
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        )
        topic = message.topic.value
        inbox = (message.mid, message_digest(topic, payload)) if message.qos > 0 else None
        redelivered = bool(getattr(message, "dup", False))
        sensor_id = self.sensor_for(message.topic)
        if sensor_id is None:
            text = payload[:4096].decode("utf-8", "replace")
            dead = DeadLetter("mqtt_payload", "unknown sensor / topic", origin=topic, payload=text)
            return Write(dead=[dead], inbox=inbox, redelivered=redelivered)
        try:
            readings = parse_payload(payload, sensor_id, now)
        except PayloadError as exc:
            text = payload[:4096].decode("utf-8", "replace")
            dead = DeadLetter("mqtt_payload", str(exc), sensor_id, origin=topic, payload=text)
            return Write(dead=[dead], inbox=inbox, redelivered=redelivered)
        return Write(readings=readings, inbox=inbox, redelivered=redelivered)

    def _client(self) -> _Client:
        tls: ssl.SSLContext | None = None
        if self.cfg.tls:
            cafile = str(self.cfg.ca_bundle) if self.cfg.ca_bundle else None
            tls = ssl.create_default_context(cafile=cafile)
        client = _Client(
            self.cfg.host,
            self.cfg.port,
            identifier=self.cfg.client_id,
            clean_session=False,
            username=self.cfg.username,
            password=self.cfg.password.get_secret_value() if self.cfg.password else None,
            keepalive=self.cfg.keepalive_s,
            tls_context=tls,
        )
        client._client.manual_ack_set(True)
        return client

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._session()
                except aiomqtt.MqttError as exc:
                    self.state = "backoff"
                    self.metrics.errors.labels("mqtt").inc()
                    delay = self.backoff.next()
                    log.warning("MQTT: %s; reconnecting in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            self.state = "stopped"

    async def _session(self) -> None:
        async with self._client() as client:
            for topic in self.topics():
                await client.subscribe(topic, qos=1)
            self.state = "connected"
            self.backoff.reset()
            log.info("MQTT: connected to %s as %s", self.cfg.url, self.cfg.client_id)
            acks: asyncio.Queue[tuple[aiomqtt.Message, Write, asyncio.Future[WriteResult]]]
            acks = asyncio.Queue()
            async with asyncio.TaskGroup() as tg:
                acker = tg.create_task(self._acker(client, acks), name="mqtt-acker")
                try:
                    async for first in client.messages:
                        # Take the whole burst that has arrived: aiomqtt's iterator costs a task
                        # and an asyncio.wait per message, which under load is more than the
                        # message's own handling. Order is kept; a disconnect still ends the
                        # iterator at the next turn.
                        for message in client.arrived(first):
                            write = self.to_write(message, datetime.now(UTC))
                            acks.put_nowait((message, write, self.writer.enqueue(write)))
                finally:
                    acker.cancel()

    async def _acker(
        self,
        client: _Client,
        acks: asyncio.Queue[tuple[aiomqtt.Message, Write, asyncio.Future[WriteResult]]],
    ) -> None:
        """Ack each message after its commit, in arrival order; hold on while the buffer is full."""
        committed = self.metrics.committed.labels("mqtt")
        while True:
            message, write, done = await acks.get()
            while True:
                try:
                    result = await done
                    break
                except BufferFull:
                    # Not acked: the broker keeps it (and what follows) until there is room.
                    self.metrics.errors.labels("buffer_full").inc()
                    await asyncio.sleep(1.0)
                    done = self.writer.enqueue(write)
            if result.committed:
                committed.inc(result.committed)
            self.dead_lettered += result.dead
            if result.duplicate:
                self.duplicates += 1
                log.info("MQTT: dropped a re-delivered copy of message %d", message.mid)
            client.ack(message)
            self.acked += 1
