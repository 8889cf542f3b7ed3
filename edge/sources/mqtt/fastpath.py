"""The MQTT client's fast path: a burst of messages per turn of the event loop, one write
for a burst's PUBACKs. It is the one module that reaches into paho's and aiomqtt's internals.

Neither library has a public way to do this: aiomqtt builds its paho client itself and hands
messages over one at a time (a task and an ``asyncio.wait`` each); paho reads a packet with
three ``recv`` calls and writes an ack per packet. Each place that touches a private name is
marked ``PRIVATE``; pyproject pins the exact versions they were tested with, and
tests/edge/test_mqtt_internals.py fails loudly if an upgrade moves or changes any of them.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from collections.abc import Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes

PUBACK = PacketTypes.PUBACK << 4


class Delivered:
    """One received PUBLISH, as much of it as the source needs. aiomqtt's own Message builds
    and validates a Topic object per message (and drops the DUP flag); under load that was a
    visible share of the daemon's time."""

    __slots__ = ("dup", "mid", "payload", "qos", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, mid: int, dup: bool = False) -> None:
        self.topic, self.payload, self.qos, self.mid, self.dup = topic, payload, qos, mid, dup


#: a PUBACK packet: fixed header, remaining length 2, packet id (the same in MQTT 3.1.1 and 5)
_PUBACK = struct.Struct("!BBH")


#: bytes taken from the socket per read (one system call for many small messages)
READ_CHUNK = 64 * 1024


class FastPaho(paho.Client):
    """paho's client as aiomqtt drives it (``loop_read`` when the socket is readable), without
    two per-message costs that paho's own loop never has to care about:

    - paho reads a packet with three ``recv`` calls (type, length, rest) and aiomqtt's reader
      callback reads one packet per turn of the event loop. Here one ``recv`` takes up to
      READ_CHUNK bytes and every complete packet in them is handled in the same turn; a
      partial packet stays in paho's own state, as after a short read. No more is taken from
      the socket in that turn, so the loop is never starved, and nothing is left in our buffer
      when the turn ends (the socket's readiness says whether more is waiting).
    - paho walks its per-topic callback matcher for every message; aiomqtt registers none.

    Only the reading side changes: packets are the same bytes, handled by paho's own code."""

    _rbuf: bytes = b""
    _rpos = 0
    _rsock: object = None
    _recv_once = False
    _filtered = False

    def _sock_recv(self, bufsize: int) -> bytes:  # PRIVATE paho: Client._sock_recv, ._sock
        if self._rsock is not self._sock:  # a new connection: what was buffered is not its
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos >= len(self._rbuf):
            if self._recv_once:  # this turn has read the socket once: paho keeps the partial
                raise BlockingIOError  # packet and comes back when the socket is readable
            data = super()._sock_recv(READ_CHUNK)  # PRIVATE paho
            if not data:
                return data  # the connection closed
            self._rbuf, self._rpos = data, 0
            self._recv_once = self._draining
        pos = self._rpos
        out = self._rbuf[pos : pos + bufsize]
        self._rpos = pos + len(out)
        return out

    _draining = False

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        self._draining, self._recv_once = True, False
        try:
            while True:
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()  # PRIVATE paho: Client._packet_read
                if rc > 0:
                    return self._loop_rc_handle(rc)  # PRIVATE paho: Client._loop_rc_handle
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._rpos >= len(self._rbuf):
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
        finally:
            self._draining = self._recv_once = False

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True
        super().message_callback_add(sub, callback)

    # PRIVATE paho: Client._handle_on_message, ._on_message, ._in_callback_mutex, ._userdata
    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        on_message = self._on_message
        if self._filtered or on_message is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            on_message(self, self._userdata, message)


class BurstClient(aiomqtt.Client):
    """aiomqtt's client, taking messages a burst at a time and acking a burst in one write.

    aiomqtt's message iterator costs a task and an ``asyncio.wait`` per message, and paho's
    ``ack`` a packet, a queue entry and a ``send`` per message; under load each was more than
    the message's own handling. Here a burst (everything that has arrived, up to a limit) costs
    one future, and its PUBACKs go out as one buffer, in the order the messages arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # PRIVATE aiomqtt: Client._client (the paho client it built); a class swap, since
        # aiomqtt builds it itself (FastPaho adds no state of its own that __init__ would set)
        if type(self._client) is paho.Client:
            self._client.__class__ = FastPaho
        self._arrived: collections.deque[Delivered] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._watched: asyncio.Future[None] | None = None

    # PRIVATE aiomqtt: Client._on_message, the callback it gives paho (replaced: no Message,
    # no per-message queue entry)
    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._arrived.append(
            Delivered(
                message.topic, bytes(message.payload), message.qos, message.mid, bool(message.dup)
            )
        )
        self._wake()

    def _wake(self, _: object = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def manual_acks(self) -> None:
        """Leave the PUBACKs to :meth:`ack_all` (paho would ack each message on receipt)."""
        # PRIVATE aiomqtt: Client._client (the paho client it built); aiomqtt has no option
        self._client.manual_ack_set(True)

    @property
    def queued(self) -> int:
        return len(self._arrived)

    async def burst(self, limit: int) -> list[Delivered]:
        """Wait for at least one message; return up to ``limit`` of them, in arrival order.
        MqttError once the connection is gone (as aiomqtt's iterator)."""
        while not self._arrived:
            # PRIVATE aiomqtt: Client._disconnected (replaced on every connect), ._loop
            disconnected = self._disconnected
            if disconnected.done():
                cause = None if disconnected.cancelled() else disconnected.exception()
                raise aiomqtt.MqttError("Disconnected during message iteration") from cause
            if disconnected is not self._watched:
                disconnected.add_done_callback(self._wake)
                self._watched = disconnected
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        arrived = self._arrived
        if len(arrived) <= limit:
            out = list(arrived)
            arrived.clear()
            return out
        return [arrived.popleft() for _ in range(limit)]

    def ack_all(self, messages: Sequence[Delivered]) -> None:
        """PUBACK every QoS 1 message of ``messages``, in order, as one queued write (paho
        writes its queue when the socket is writable, as it would the single acks)."""
        mids = [m.mid for m in messages if m.qos == 1]
        if not mids:
            return
        packet = b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids])
        # PRIVATE paho: Client._packet_queue(command, packet, mid, qos), what its ack() calls;
        # paho has no public way to queue one write of many acks (bench/edge.py: capture)
        self._client._packet_queue(PUBACK, packet, 0, 1)  # noqa: SLF001
