"""The MQTT source: subscribe, hand bursts to the writer, ack after the commit, reconnect.

See :mod:`edge.sources.mqtt` for what it promises; the client's fast path is in
:mod:`edge.sources.mqtt.fastpath`, payload parsing in :mod:`edge.sources.mqtt.payload`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import ssl
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.backoff import Backoff
from edge.buffer import (
    BufferFull,
    DeadLetter,
    Delivery,
    NewReading,
    Write,
    WriteResult,
    message_digest,
)
from edge.config import MqttConfig, default_client_id
from edge.instance import Refused
from edge.metrics import EdgeMetrics
from edge.sources.mqtt.fastpath import BurstClient, Delivered
from edge.sources.mqtt.payload import PayloadError, json_object, parse_payload
from edge.sources.mqtt.sensor import WILDCARD_TOPIC, MqttSensor
from edge.writer import Outcome, Writer

log = logging.getLogger("benchlink.edge.mqtt")

#: messages handed to the writer and not yet acked, at most; then the receive loop waits
MAX_PENDING_ACKS = 1000
#: device-stamped readings per sensor whose skew the heartbeat's median is taken over
SKEW_WINDOW = 32
#: while the buffer is full, how often the first refused message is tried again
FULL_RETRY_S = 1.0
#: the retained presence of the daemon that holds a client id
PRESENCE_TOPIC = "benchlink/edge/{client_id}/alive"
#: longest wait for the probe's answer (the broker answers in milliseconds)
PROBE_TIMEOUT_S = 5.0


class ClientIdTaken(Refused):
    """Another live daemon holds the MQTT client id."""


#: messages of one burst, their writes, and the future of their group commit
_Handed = tuple[list[Delivered], list[Write], "asyncio.Future[list[Outcome]]"]


class MqttSource:
    def __init__(
        self,
        cfg: MqttConfig,
        sensors: Sequence[MqttSensor],
        writer: Writer,
        metrics: EdgeMetrics,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        edge_id: str | None = None,
        on_refused: Callable[[Refused], None] | None = None,
    ) -> None:
        """``edge_id``: the buffer's id (the default client id, and the presence's owner);
        ``on_refused``: called, and the source stops, when the client id is taken (without
        it, :class:`ClientIdTaken` ends :meth:`run`)."""
        self.cfg, self.writer, self.metrics = cfg, writer, metrics
        self.edge_id = edge_id or uuid.uuid4().hex
        self.client_id = cfg.client_id or default_client_id(self.edge_id)
        self.presence_topic = PRESENCE_TOPIC.format(client_id=self.client_id)
        self.on_refused = on_refused
        #: the presence topic is usable: announce this daemon there (see check_client_id)
        self._announce = False
        self.sensors = {str(s.sensor_id): s for s in sensors}
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
        #: messages handed to the writer and not yet acked (this connection)
        self._unacked = 0
        #: set when acks made room below MAX_PENDING_ACKS
        self._room = asyncio.Event()
        #: this connection may still be re-sending what was committed before (see
        #: :mod:`edge.buffer.inbox`): self-timestamped messages are looked up as well
        self._resending = False
        self._committed = metrics.committed.labels("mqtt")
        #: the arrival time handed to the last message (see :meth:`arrivals`)
        self._arrival = datetime.min.replace(tzinfo=UTC)
        #: the edge's clock (the daemon's time source)
        self.now: Callable[[], float] = time.time
        #: per sensor, its recent device-stamped readings' timestamp minus arrival (seconds)
        self.skews: dict[str, collections.deque[float]] = {}
        #: builds the client (tests put a fake broker here)
        self.make_client: Callable[[], Any] = self._client

    def topics(self) -> list[str]:
        return [WILDCARD_TOPIC, *sorted(self.custom)]

    def sensor_for(self, topic: str) -> str | None:
        try:
            return self._routes[topic]
        except KeyError:
            pass
        sensor_id = self._route(aiomqtt.Topic(topic))
        if len(self._routes) < 10_000:  # a flood of stray topics must not grow it forever
            self._routes[topic] = sensor_id
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

    def arrivals(self, messages: Sequence[Delivered], conn: str = "") -> list[Write]:
        """The writes of a burst. A reading without a timestamp of its own is stamped with
        its arrival, strictly after the one before (a microsecond apart within a burst): the
        cloud keeps one reading per sensor and timestamp, and a burst arrives at one instant."""
        now = max(
            datetime.fromtimestamp(self.now(), UTC), self._arrival + timedelta(microseconds=1)
        )
        writes = []
        for message in messages:
            write = self.to_write(message, now, conn)
            writes.append(write)
            now += timedelta(microseconds=max(1, len(write.readings)))
        self._arrival = now
        return writes

    def to_write(self, message: Delivered, now: datetime, conn: str = "") -> Write:
        """The write for one message: its readings, or a dead letter saying why not. Never
        raises: whatever goes wrong with one message is that message's dead letter."""
        payload = message.payload
        topic = message.topic
        key = (message.mid, message_digest(topic, payload)) if message.qos > 0 else None
        delivery = Delivery(key, conn, redelivered=message.dup)
        base = Write(source="mqtt", delivery=delivery)
        sensor_id: str | None = None
        try:
            sensor_id = self.sensor_for(topic)
            if sensor_id is None:
                reason = "unknown sensor / topic"
            else:
                base.readings = parse_payload(payload, sensor_id, now)
                self._note_skew(sensor_id, base.readings, now)
                if self._resending and key is not None and not delivery.suspect:
                    delivery.suspect = _device_stamped(base.readings, now)
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

    def _note_skew(self, sensor_id: str, readings: Sequence[NewReading], now: datetime) -> None:
        """The device's own timestamps against their arrival. Those parse_payload stamped
        with the arrival are ``now`` plus at most a microsecond each: not the device's."""
        own = timedelta(microseconds=len(readings))
        for r in readings:
            skew = r.timestamp - now
            if not timedelta(0) <= skew <= own:
                recent = self.skews.setdefault(sensor_id, collections.deque(maxlen=SKEW_WINDOW))
                recent.append(skew.total_seconds())

    def device_skew_ms(self) -> dict[str, float]:
        """Each device-stamping sensor's skew: the median of its recent ones, in ms."""
        return {
            sid: round(statistics.median(recent) * 1000, 3)
            for sid, recent in self.skews.items()
            if recent
        }

    def _client(self) -> BurstClient:
        tls = self._tls()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        # v5 lets the client bound what the broker sends it unacknowledged (as mosquitto's
        # max_inflight_messages does for 3.1.1 clients): the daemon's memory stays flat.
        props.ReceiveMaximum = MAX_PENDING_ACKS
        client = BurstClient(
            self.cfg.host,
            self.cfg.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            # a connection that dies clears the presence (an empty retained message)
            will=aiomqtt.Will(self.presence_topic, b"", qos=1, retain=True)
            if self._announce
            else None,
            username=self.cfg.username,
            password=self.cfg.password.get_secret_value() if self.cfg.password else None,
            keepalive=self.cfg.keepalive_s,
            tls_context=tls,
        )
        client.manual_acks()
        return client

    def _tls(self) -> ssl.SSLContext | None:
        if not self.cfg.tls:
            return None
        cafile = str(self.cfg.ca_bundle) if self.cfg.ca_bundle else None
        return ssl.create_default_context(cafile=cafile)

    def presence(self) -> bytes:
        return json.dumps(
            {
                "edge": self.edge_id,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ).encode()

    async def check_client_id(self) -> bool:
        """ClientIdTaken if the presence topic names another edge; else whether the topic is
        usable. The broker unreachable: MqttError, as for any connect. A topic this user may
        not use (an ACL without it: Mosquitto drops the connection that tries) is logged, and
        the daemon connects without announcing itself."""
        nonce = uuid.uuid4().hex
        probe = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            identifier=f"{self.client_id}-probe-{nonce[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            username=self.cfg.username,
            password=self.cfg.password.get_secret_value() if self.cfg.password else None,
            tls_context=self._tls(),
            timeout=PROBE_TIMEOUT_S,
        )
        await probe.__aenter__()
        try:
            holder = await self._read_presence(probe, nonce)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self.metrics.errors.labels("mqtt_presence").inc()
            log.warning(
                "MQTT: could not read %s (%s): a second daemon with the client id %s would not"
                " be noticed; let this MQTT user read and write that topic",
                self.presence_topic,
                str(exc) or type(exc).__name__,
                self.client_id,
            )
            return False
        finally:
            with contextlib.suppress(Exception):
                await probe.__aexit__(None, None, None)
        if holder is not None and holder.get("edge") != self.edge_id:
            raise ClientIdTaken(
                f"MQTT client id {self.client_id!r} is held by another live edge daemon (pid"
                f" {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')};"
                f" presence on {self.presence_topic}): give this edge its own [mqtt] client_id,"
                " or leave it unset to use the one derived from this buffer"
            )
        return True

    async def _read_presence(self, probe: aiomqtt.Client, nonce: str) -> dict[str, Any] | None:
        """The retained presence on the topic, if any (MqttError, TimeoutError if unreadable)."""
        granted = await probe.subscribe(self.presence_topic, qos=1)
        if any(getattr(code, "value", code) >= 0x80 for code in granted or []):
            raise aiomqtt.MqttError("subscription refused")
        # Retained messages come before anything published after the subscription: our own
        # marker, back on the same topic, says nothing more is coming.
        await probe.publish(self.presence_topic, json.dumps({"probe": nonce}), qos=1)
        holder: dict[str, Any] | None = None
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async for message in probe.messages:
                data = json_object(message.payload)
                if data.get("probe") == nonce:
                    return holder
                if message.retain and data.get("edge"):
                    holder = data
        return holder

    async def run(self) -> None:
        """Connect, take messages, reconnect with backoff -- whatever went wrong."""
        try:
            while True:
                try:
                    await self._session()
                    self._delay = self.backoff.next()  # ended cleanly: still no tight loop
                except ClientIdTaken as exc:
                    self.metrics.errors.labels("mqtt_client_id_taken").inc()
                    if self.on_refused is None:
                        raise
                    self.on_refused(exc)
                    return
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
        probing = self.make_client == self._client  # a test's fake broker has no presence
        self._announce = probing and await self.check_client_id()
        async with self.make_client() as client:
            if self._announce:
                await client.publish(self.presence_topic, self.presence(), qos=1, retain=True)
            try:
                await self._take(client)
            except asyncio.CancelledError:
                if self._announce:  # a clean stop: nobody holds the id now (a lost
                    # connection's will does the same)
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(2):
                            await client.publish(self.presence_topic, b"", qos=1, retain=True)
                raise

    async def _take(self, client: BurstClient) -> None:
        for topic in self.topics():
            await client.subscribe(topic, qos=1)
        self.state = "connected"
        self.backoff.reset()
        log.info("MQTT: connected to %s as %s", self.cfg.url, self.client_id)
        conn = uuid.uuid4().hex
        self._resending = True
        acks: asyncio.Queue[_Handed] = asyncio.Queue()
        self._unacked = 0
        self._intake.set()
        try:
            async with asyncio.TaskGroup() as tg:
                acker = tg.create_task(self._acker(client, acks), name="mqtt-acker")
                try:
                    while True:
                        # At most MAX_PENDING_ACKS messages handed over and not yet acked;
                        # the rest waits in the client (bounded by the broker's in-flight
                        # window) and at the broker.
                        while self._unacked >= MAX_PENDING_ACKS:
                            self._room.clear()
                            await self._room.wait()
                        # Everything that has arrived goes to the writer as one unit (one
                        # future, one queue entry); order is kept.
                        messages = await client.burst(MAX_PENDING_ACKS - self._unacked)
                        writes = self.arrivals(messages, conn)
                        await self._intake.wait()  # closed while the buffer is full
                        self._unacked += len(messages)
                        acks.put_nowait((messages, writes, self.writer.enqueue_many(writes)))
                finally:
                    acker.cancel()
        except ExceptionGroup as group:
            # A lost connection (a broker restart, the network) is what run() handles with a
            # reconnect; inside the task group it would come wrapped, as an unexpected error.
            lost, other = group.split(aiomqtt.MqttError)
            if lost is None or other is not None:
                raise
            first: BaseException = lost
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def _acker(self, client: BurstClient, acks: asyncio.Queue[_Handed]) -> None:
        """Ack each burst after its commit, in arrival order."""
        while True:
            messages, writes, done = await acks.get()
            results = await done
            refused = next(
                (i for i, r in enumerate(results) if isinstance(r, BufferFull)), len(results)
            )
            self._settle(client, messages[:refused], writes[:refused], results[:refused])
            if refused < len(results):
                held: list[tuple[Delivered, Write]] = []
                rest = slice(refused, None)
                self._sort_out(client, messages[rest], writes[rest], results[rest], held)
                await self._recover(client, acks, held)

    def _settle(
        self,
        client: BurstClient,
        messages: Sequence[Delivered],
        writes: Sequence[Write],
        results: Sequence[Outcome],
    ) -> None:
        """Count and ack committed messages (in order, one write to the socket)."""
        committed = 0
        for message, write, result in zip(messages, writes, results, strict=True):
            assert isinstance(result, WriteResult)
            committed += result.committed
            if write.delivery is not None and write.delivery.suspect and not result.duplicate:
                # the broker sends a session's queue in order, and re-sends come first: after
                # a message that is not a copy, none of this connection's can be
                self._resending = False
            self.dead_lettered += result.dead
            if result.duplicate:
                self.duplicates += 1
                log.info("MQTT: dropped a re-delivered copy of message %d", message.mid)
        if committed:
            self._committed.inc(committed)
        client.ack_all(messages)
        self.acked += len(messages)
        self._unacked -= len(messages)
        self._room.set()

    def _sort_out(
        self,
        client: BurstClient,
        messages: Sequence[Delivered],
        writes: Sequence[Write],
        results: Sequence[Outcome],
        held: list[tuple[Delivered, Write]],
    ) -> None:
        """Settle what went in, hold what the full buffer refused (in order)."""
        for m, w, r in zip(messages, writes, results, strict=True):
            if isinstance(r, BufferFull):
                held.append((m, w))
            else:
                self._settle(client, [m], [w], [r])

    async def _recover(
        self, client: BurstClient, acks: asyncio.Queue[_Handed], held: list[tuple[Delivered, Write]]
    ) -> None:
        """The buffer is full: stop taking messages (the broker keeps them), then commit the
        refused ones again -- the first until it goes in, then the rest at once, in order."""
        self._intake.clear()
        self.metrics.errors.labels("buffer_full").inc()
        while not acks.empty():  # refused as well: the writer blocks us after a refusal
            ms, ws, done = acks.get_nowait()
            self._sort_out(client, ms, ws, await done, held)
        try:
            while held:
                await asyncio.sleep(FULL_RETRY_S)
                m, w = held[0]
                try:
                    result = await self.writer.enqueue(w, probe=True)
                except BufferFull:
                    continue
                self._settle(client, [m], [w], [result])
                rest, held = held[1:], []
                if rest:
                    ms, ws = [m for m, _ in rest], [w for _, w in rest]
                    results = await self.writer.enqueue_many(ws)
                    # full again: the refused ones wait again (committed ones are acked)
                    self._sort_out(client, ms, ws, results, held)
        finally:
            self._intake.set()


def _device_stamped(readings: Sequence[NewReading], now: datetime) -> bool:
    """Whether every reading carries the device's own timestamp: none has the arrival stamp
    :func:`~edge.sources.mqtt.payload.parse_payload` gives the i-th reading without one (a
    device timestamp equal to it counts as the edge's: never dropped as a copy, see
    :mod:`edge.buffer.inbox`)."""
    step = timedelta(microseconds=1)
    return bool(readings) and all(r.timestamp != now + i * step for i, r in enumerate(readings))
