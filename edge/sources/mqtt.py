"""MQTT source: QoS 1 on a persistent session, acknowledged only after the SQLite commit.

The client id is fixed and the session persistent (``clean_session=False``), so the broker keeps
what arrives while the daemon is down and re-delivers every message that was not acknowledged.
Acks are manual (paho's ``manual_ack``; aiomqtt 2.5 has no switch for it, so the underlying
paho client is set directly): a message is acked after its readings are committed, in the
order the messages arrived (MQTT 3.1.1 §4.6).

A crash between the commit and the PUBACK makes the broker re-deliver the message with the DUP
flag; the buffer records (packet id, digest of topic+payload) in the commit's transaction, deletes
the row in the first commit after the PUBACK, and drops a DUP message that matches a row still
there -- a message committed but not (known to be) acked -- so the reading is stored once. Packet
ids are reused every 65,535 messages: a row that outlived its message would make a new message
with the same id and payload look like a copy, hence the deletion (and, for the rows of a
crashed connection, the purge at the new connection's first non-DUP message). aiomqtt drops the
DUP flag, so a small subclass keeps it.

Malformed payloads, naive or out-of-range timestamps, non-finite values (also inside ``meta``),
unknown sensors -- and anything else that fails while handling one message -- are dead-lettered
with the reason and acked: the pipeline never stalls on a poison message, and a poison message
never kills the daemon.

Backpressure: the broker sends at most ``max_inflight_messages`` unacknowledged messages
(mosquitto.conf), which bounds what waits in the client; in the daemon at most
:data:`MAX_PENDING_ACKS` messages wait for their commit, then the receive loop waits. While the
buffer is full the receive loop stops taking messages (they stay at the broker); when room
appears, the refused messages are committed again in order, all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
import paho.mqtt.client as paho
from pydantic import ValidationError

from common.wire import Reading
from edge.backoff import Backoff
from edge.buffer import (
    BufferFull,
    DeadLetter,
    NewReading,
    Write,
    WriteResult,
    message_digest,
    reading_row_values,
)
from edge.config import DEFAULT_TOPIC, MqttConfig, SensorConfig
from edge.metrics import EdgeMetrics
from edge.writer import Writer

log = logging.getLogger("benchlink.edge.mqtt")

WILDCARD_TOPIC = DEFAULT_TOPIC.format(sensor_id="+")
#: messages handed to the writer and not yet acked, at most; then the receive loop waits
MAX_PENDING_ACKS = 1000
#: while the buffer is full, how often the first refused message is tried again
FULL_RETRY_S = 1.0


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
        except (ValidationError, ValueError, RecursionError):
            pass
        else:
            first = NewReading(sensor_id, reading.timestamp, reading.raw_value, reading.meta)
            return [_checked(first, 0)]
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("not JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer over 4,300 digits
        raise PayloadError(f"not JSON: {str(exc)[:200]}") from None
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
    new = NewReading(sensor_id, reading.timestamp, reading.raw_value, reading.meta)
    return _checked(new, index)


def _checked(reading: NewReading, index: int) -> NewReading:
    """Refuse here what the buffer could not store or the cloud would refuse (422 for a whole
    batch): NaN/Infinity inside meta, a timestamp out of range, an integer too long to print."""
    try:
        reading_row_values(reading)
    except ValueError as exc:
        raise PayloadError(f"{f'[{index}] ' if index else ''}{exc}") from None
    return reading


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


_Handed = tuple[aiomqtt.Message, Write, "asyncio.Future[WriteResult]"]


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
        self._delay = 0.0
        #: set while messages may be taken; cleared while the buffer is full
        self._intake = asyncio.Event()
        #: builds the client (tests put a fake broker here)
        self.make_client: Callable[[], Any] = self._client

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

    def to_write(self, message: aiomqtt.Message, now: datetime, conn: str = "") -> Write:
        """The write for one message: its readings, or a dead letter saying why not. Never
        raises: whatever goes wrong with one message is that message's dead letter."""
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        )
        topic = message.topic.value
        inbox = (message.mid, message_digest(topic, payload)) if message.qos > 0 else None
        redelivered = bool(getattr(message, "dup", False))
        base = Write(inbox=inbox, redelivered=redelivered, conn=conn, source="mqtt")
        sensor_id: str | None = None
        try:
            sensor_id = self.sensor_for(message.topic)
            if sensor_id is None:
                reason = "unknown sensor / topic"
            else:
                base.readings = parse_payload(payload, sensor_id, now)
                return base
        except PayloadError as exc:
            reason = str(exc)
        except Exception as exc:  # a bug or a case nobody thought of: the message, not the daemon
            self.metrics.errors.labels("mqtt_message").inc()
            log.exception("MQTT: message %d on %s could not be handled", message.mid, topic)
            reason = f"unexpected error: {type(exc).__name__}: {str(exc)[:300]}"
        text = payload[:4096].decode("utf-8", "replace")
        base.dead = [DeadLetter("mqtt_payload", reason, sensor_id, origin=topic, payload=text)]
        return base

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
        """Connect, take messages, reconnect with backoff -- whatever went wrong."""
        try:
            while True:
                try:
                    await self._session()
                    self._delay = self.backoff.next()  # ended cleanly: still no tight loop
                except aiomqtt.MqttError as exc:
                    self._failed("mqtt", f"MQTT: {exc}")
                except Exception as exc:
                    # A bug must not kill the daemon: the unacked messages stay at the broker
                    # and come back on the next connection.
                    log.exception("MQTT source failed")
                    self._failed("mqtt_unexpected", f"MQTT: unexpected {type(exc).__name__}")
                await asyncio.sleep(self._delay)
        finally:
            self.state = "stopped"

    def _failed(self, kind: str, what: str) -> None:
        self.state = "backoff"
        self.metrics.errors.labels(kind).inc()
        self._delay = self.backoff.next()
        log.warning("%s; reconnecting in %.1fs", what, self._delay)

    async def _session(self) -> None:
        async with self.make_client() as client:
            for topic in self.topics():
                await client.subscribe(topic, qos=1)
            self.state = "connected"
            self.backoff.reset()
            log.info("MQTT: connected to %s as %s", self.cfg.url, self.cfg.client_id)
            conn = uuid.uuid4().hex
            fresh_seen = False
            acks: asyncio.Queue[_Handed] = asyncio.Queue(MAX_PENDING_ACKS)
            self._intake.set()
            async with asyncio.TaskGroup() as tg:
                acker = tg.create_task(self._acker(client, acks), name="mqtt-acker")
                try:
                    async for first in client.messages:
                        # Take the whole burst that has arrived: aiomqtt's iterator costs a task
                        # and an asyncio.wait per message, which under load is more than the
                        # message's own handling. Order is kept; a disconnect still ends the
                        # iterator at the next turn.
                        for message in client.arrived(first):
                            write = self.to_write(message, datetime.now(UTC), conn)
                            if not fresh_seen and not write.redelivered:
                                write.fresh = fresh_seen = True
                            await self._intake.wait()  # closed while the buffer is full
                            await acks.put((message, write, self.writer.enqueue(write)))
                finally:
                    acker.cancel()

    async def _acker(self, client: _Client, acks: asyncio.Queue[_Handed]) -> None:
        """Ack each message after its commit, in arrival order."""
        while True:
            message, write, done = await acks.get()
            try:
                result = await done
            except BufferFull:
                await self._recover(client, acks, message, write)
                continue
            self._settle(client, message, write, result)

    def _settle(
        self, client: _Client, message: aiomqtt.Message, write: Write, result: WriteResult
    ) -> None:
        if result.committed:
            self.metrics.committed.labels("mqtt").inc(result.committed)
        self.dead_lettered += result.dead
        if result.duplicate:
            self.duplicates += 1
            log.info("MQTT: dropped a re-delivered copy of message %d", message.mid)
        client.ack(message)
        if write.inbox is not None:
            self.writer.note_acked(write.inbox)
        self.acked += 1

    async def _recover(
        self,
        client: _Client,
        acks: asyncio.Queue[_Handed],
        message: aiomqtt.Message,
        write: Write,
    ) -> None:
        """The buffer is full: stop taking messages (the broker keeps them), then commit the
        refused ones again -- the first until it goes in, then the rest at once, in order."""
        self._intake.clear()
        self.metrics.errors.labels("buffer_full").inc()
        held: list[tuple[aiomqtt.Message, Write]] = [(message, write)]
        while not acks.empty():  # refused as well: the writer blocks us after a refusal
            m, w, done = acks.get_nowait()
            with contextlib.suppress(BufferFull):
                self._settle(client, m, w, await done)
                continue
            held.append((m, w))
        try:
            while held:
                await asyncio.sleep(FULL_RETRY_S)
                m, w = held[0]
                try:
                    result = await self.writer.enqueue(w, probe=True)
                except BufferFull:
                    continue
                self._settle(client, m, w, result)
                rest = [(m, w, self.writer.enqueue(w)) for m, w in held[1:]]
                held = []
                for i, (m, w, done) in enumerate(rest):
                    try:
                        result = await done
                    except BufferFull:  # full again: this one and all after it wait again
                        held = [(m, w)]
                        for m2, w2, done2 in rest[i + 1 :]:
                            with contextlib.suppress(BufferFull):
                                await done2
                            held.append((m2, w2))
                        break
                    self._settle(client, m, w, result)
        finally:
            self._intake.set()
