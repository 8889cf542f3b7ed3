"""MQTT source: QoS 1 on a persistent session, acknowledged only after the SQLite commit.

MQTT v5. The client id is fixed (by default derived from the buffer's own id, so two edges
never share one by accident) and the session persistent (``clean_start=False``) with a
session expiry (``mqtt.session_expiry_s``), so the broker keeps what arrives while the daemon
is down -- for that long, not for ever -- and re-delivers every message that was not
acknowledged.

One daemon per client id: a second client with the same id silently takes the session over
(MQTT has no way to refuse it), with its backlog and its in-flight messages, which the first
daemon may already have committed -- they are then stored twice. So the daemon announces
itself: a retained presence message on ``benchlink/edge/<client id>/alive`` naming its buffer's
id, cleared by its will if its connection dies and by itself when it stops. Before every
connect, a short probe connection (a client id of its own, clean) reads that topic; a presence
of another edge means another live daemon holds the id, and this one refuses to start
(:class:`ClientIdTaken`) instead of taking the session. Its own presence (a restart after a
crash, before the broker noticed) is not a conflict: only one daemon runs per buffer.
Acks are manual (paho's ``manual_ack``; aiomqtt 2.5 has no switch for it, so the underlying
paho client is set directly): a message is acked after its readings are committed, in the
order the messages arrived (MQTT 3.1.1 §4.6).

The broker sends a message again when it does not know the daemon took it: after a crash
between the commit and the PUBACK (flagged DUP), and after a broker restart -- a PUBACK written
is not a PUBACK the broker processed or saved (Mosquitto flags everything it re-sends after a
graceful restart DUP; after a kill it comes back from its last save and re-sends what was
queued then *without* DUP). The buffer's inbox (:mod:`edge.buffer.inbox`) records each
message's (packet id, digest of topic+payload) in the commit's transaction and keeps it after
the ack; it drops a message whose key is recorded less than half the packet ids behind the
newest committed. Looked up: every DUP message, and -- at a connection's start, until one is
found not to be a copy (the broker re-sends first, in order) -- messages without DUP whose
readings all carry the device's own timestamp: the same topic, id and payload is then the same
reading. A bare number without DUP is never dropped (the same value twice may be two readings).
aiomqtt drops the DUP flag, so the fast path (:mod:`edge.sources.mqtt.fastpath`) keeps it.

Malformed payloads, naive or out-of-range timestamps, non-finite values (also inside ``meta``),
unknown sensors -- and anything else that fails while handling one message -- are dead-lettered
with the reason and acked: the pipeline never stalls on a poison message, and a poison message
never kills the daemon.

Backpressure: the broker sends at most ``max_inflight_messages`` unacknowledged messages
(mosquitto.conf), which bounds what waits in the client; in the daemon at most
:data:`~edge.sources.mqtt.source.MAX_PENDING_ACKS` messages wait for their commit, then the
receive loop waits. While the buffer is full the receive loop stops taking messages (they stay
at the broker); when room appears, the refused messages are committed again in order, all at
once.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.config import default_client_id
from edge.sources.base import Source, SourceContext, SourceKind, register
from edge.sources.mqtt.fastpath import READ_CHUNK, BurstClient, Delivered, FastPaho
from edge.sources.mqtt.payload import PayloadError, parse_payload
from edge.sources.mqtt.sensor import DEFAULT_TOPIC, WILDCARD_TOPIC, MqttSensor
from edge.sources.mqtt.source import MAX_PENDING_ACKS, ClientIdTaken, MqttSource

__all__ = [
    "DEFAULT_TOPIC",
    "KIND",
    "MAX_PENDING_ACKS",
    "READ_CHUNK",
    "WILDCARD_TOPIC",
    "BurstClient",
    "ClientIdTaken",
    "Delivered",
    "FastPaho",
    "MqttSensor",
    "MqttSource",
    "PayloadError",
    "default_client_id",
    "parse_payload",
]


def start(sensors: Sequence[MqttSensor], ctx: SourceContext) -> dict[str, Source]:
    """One subscription, on the ``[mqtt]`` broker, for every MQTT sensor."""
    sync = ctx.config.sync
    source = MqttSource(
        ctx.config.mqtt,
        sensors,
        ctx.writer,
        ctx.metrics,
        backoff_initial_s=sync.backoff_initial_s,
        backoff_max_s=sync.backoff_max_s,
        edge_id=ctx.edge_id,
        on_refused=ctx.refuse,
    )
    source.now = ctx.now
    return {"mqtt": source}


KIND = register(SourceKind("mqtt", MqttSensor, start))
