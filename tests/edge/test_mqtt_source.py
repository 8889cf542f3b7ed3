"""The MQTT source's logic against a fake broker client: what is stored, what is acked, in
which order -- across a crash, poison messages and a full buffer."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge.buffer import Buffer, BufferFull, NewReading, Write
from edge.config import MqttConfig
from edge.metrics import EdgeMetrics
from edge.sources import mqtt as mqtt_module
from edge.sources.mqtt import MqttSensor, MqttSource
from edge.sources.mqtt import source as mqtt_source
from edge.writer import Writer
from tests.edge.fakebroker import FakeClient, message

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def topic(sid: str) -> str:
    return f"benchlink/sensors/{sid}/readings"


def sensor_config(sid: str) -> MqttSensor:
    return MqttSensor.model_validate(
        {
            "sensor_id": sid,
            "token": "t",
            "run_id": str(uuid.uuid4()),
            "capture_session_id": str(uuid.uuid4()),
            "source": "mqtt",
        }
    )


@contextlib.asynccontextmanager
async def running(
    buffer: Buffer, sid: str, client: FakeClient
) -> AsyncIterator[tuple[MqttSource, Writer]]:
    """A writer and the MQTT source on ``client``; leaving it is a crash of the source (the
    writer commits what it was given, nothing more is acked)."""
    metrics = EdgeMetrics()
    writer = Writer(buffer, metrics)
    src = MqttSource(MqttConfig(), [sensor_config(sid)], writer, metrics, backoff_initial_s=0.01)
    src.make_client = lambda: client
    async with asyncio.TaskGroup() as tg:
        wt = tg.create_task(writer.run())
        st = tg.create_task(src.run())
        try:
            yield src, writer
        finally:
            st.cancel()
            await writer.close()
            await wt


async def until(pred: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def values(buffer: Buffer) -> list[float]:
    return [r[0] for r in buffer.conn.execute("SELECT raw_value FROM readings ORDER BY id")]


def stamped(seq: int) -> bytes:
    return f'{{"timestamp": "2026-01-01T00:00:{seq:02d}+00:00", "raw_value": {seq}}}'.encode()


async def test_a_reused_packet_id_with_the_same_payload_is_a_new_message(
    buffer: Buffer, sensor: str
) -> None:
    """Packet ids wrap every 65,535 messages: a message taken long ago must not make a new one
    with its id and payload (a bare number) look like a copy after a crash."""
    t = topic(sensor)
    first = FakeClient()
    async with running(buffer, sensor, first):
        # id 7, then the broker's ids go round (the daemon commits them in order)
        first.deliver(message(t, b"1.0", 7), message(t, b"2.0", 30_000))
        first.deliver(message(t, b"3.0", 60_000), message(t, b"4.0", 5))
        await until(lambda: first.acked == [7, 30_000, 60_000, 5])
    # the broker gives id 7 to another "1.0"; the daemon is killed before committing it, and
    # the broker sends it again with DUP
    again = FakeClient()
    async with running(buffer, sensor, again):
        again.deliver(message(t, b"1.0", 7, dup=True))
        await until(lambda: again.acked == [7])
    assert values(buffer) == [1.0, 2.0, 3.0, 4.0, 1.0]


async def test_a_committed_but_unacked_message_is_stored_once(buffer: Buffer, sensor: str) -> None:
    t = topic(sensor)
    first = FakeClient()
    first.ack = lambda m: None  # type: ignore[method-assign]  # killed before the PUBACK
    async with running(buffer, sensor, first) as (src, _):
        first.deliver(message(t, b"1.0", 7))
        await until(lambda: src.acked == 1)
    again = FakeClient()
    async with running(buffer, sensor, again) as (src, _):
        again.deliver(message(t, b"1.0", 7, dup=True), message(t, b"3.0", 9))
        await until(lambda: again.acked == [7, 9])
        assert src.duplicates == 1
    assert values(buffer) == [1.0, 3.0]


async def test_acked_messages_sent_again_by_a_restarted_broker_are_stored_once(
    buffer: Buffer, sensor: str
) -> None:
    """The PUBACKs were written, but the broker stopped before it processed them (or came back
    from a save older than them): it sends the messages again, flagged DUP."""
    t = topic(sensor)
    first = FakeClient()
    async with running(buffer, sensor, first):
        first.deliver(*[message(t, b"%d" % i, i) for i in range(1, 6)])
        await until(lambda: first.acked == [1, 2, 3, 4, 5])
        first.deliver(message(t, b"6", 6))
        await until(lambda: first.acked == [1, 2, 3, 4, 5, 6])
    again = FakeClient()
    async with running(buffer, sensor, again) as (src, _):
        again.deliver(*[message(t, b"%d" % i, i, dup=True) for i in range(2, 8)])
        await until(lambda: again.acked == [2, 3, 4, 5, 6, 7])
        assert src.duplicates == 5
    assert values(buffer) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


async def test_a_self_timestamped_copy_without_dup_is_stored_once_a_bare_number_twice(
    buffer: Buffer, sensor: str
) -> None:
    """A broker back from an old save may send messages it had only queued then without DUP.
    With the device's timestamp, the same topic, id and payload is the same reading: dropped.
    A bare number is stamped on arrival: the same value twice may be two readings: kept."""
    t = topic(sensor)
    first = FakeClient()
    async with running(buffer, sensor, first):
        first.deliver(message(t, stamped(1), 1), message(t, b"5.0", 2), message(t, stamped(3), 3))
        await until(lambda: first.acked == [1, 2, 3])
    again = FakeClient()
    async with running(buffer, sensor, again) as (src, _):
        again.deliver(message(t, stamped(1), 1), message(t, b"5.0", 2), message(t, stamped(3), 3))
        await until(lambda: again.acked == [1, 2, 3])
        assert src.duplicates == 2
        # after a message that is not a copy, no other message without DUP of this connection
        # is looked up (the broker re-sends first): the hot path pays nothing more
        again.deliver(message(t, stamped(4), 4))
        await until(lambda: again.acked == [1, 2, 3, 4])
        again.deliver(message(t, stamped(1), 1))
        await until(lambda: again.acked == [1, 2, 3, 4, 1])
        assert src.duplicates == 2
    assert values(buffer) == [1.0, 5.0, 3.0, 5.0, 4.0, 1.0]


async def test_ids_a_restored_broker_gives_again_to_new_messages(
    buffer: Buffer, sensor: str
) -> None:
    """A broker killed and restored from its last save forgets the ids it gave after the save
    (here 3 and 4, which the daemon committed) and gives them to new messages, without DUP: a
    new reading (another timestamp, or a bare number even with the same value) is stored."""
    t = topic(sensor)
    first = FakeClient()
    async with running(buffer, sensor, first):
        first.deliver(*[message(t, stamped(i), i) for i in (1, 2)])
        first.deliver(message(t, stamped(3), 3), message(t, b"7.0", 4))
        await until(lambda: first.acked == [1, 2, 3, 4])
    again = FakeClient()
    async with running(buffer, sensor, again) as (src, _):
        # the saved state: 2 was still in flight
        again.deliver(message(t, stamped(2), 2, dup=True))
        again.deliver(message(t, stamped(13), 3), message(t, b"7.0", 4))
        await until(lambda: again.acked == [2, 3, 4])
        assert src.duplicates == 1
    assert values(buffer) == [1.0, 2.0, 3.0, 7.0, 13.0, 7.0]


async def test_the_inbox_keeps_a_window_of_packet_ids(buffer: Buffer, sensor: str) -> None:
    """Rows stay after the ack, but only for the last WINDOW packet ids: the table is bounded,
    and a row that fell out of the window can never match."""
    from edge.buffer.inbox import MIDS, WINDOW

    t = topic(sensor)
    client = FakeClient()
    mids = [1, 2, WINDOW // 2, WINDOW, WINDOW + 3, MIDS, 4]
    async with running(buffer, sensor, client):
        for i, mid in enumerate(mids):
            client.deliver(message(t, b"%d" % i, mid))
            await until(lambda i=i: len(client.acked) == i + 1)
    rows = [r[0] for r in buffer.conn.execute("SELECT mid FROM mqtt_unacked ORDER BY mid")]
    # each row went once it was WINDOW ids behind the newest at some commit (1 and 2 when
    # WINDOW + 3 came, WINDOW // 2 at MIDS, WINDOW and WINDOW + 3 at 4)
    assert rows == [4, MIDS]


async def test_rows_of_a_file_written_before_the_window_still_match(
    buffer: Buffer, sensor: str
) -> None:
    """A buffer from before the window holds only rows committed and not known to be acked: its
    copy, re-sent with DUP after the upgrade, is still dropped."""
    from edge.buffer import message_digest

    t = topic(sensor)
    buffer.conn.execute(
        "INSERT INTO mqtt_unacked VALUES (7, ?, 'old-conn', 0)", (message_digest(t, b"1.0"),)
    )
    client = FakeClient()
    async with running(buffer, sensor, client) as (src, _):
        client.deliver(message(t, b"1.0", 7, dup=True), message(t, b"5.0", 8))
        await until(lambda: client.acked == [7, 8])
        assert src.duplicates == 1
    assert values(buffer) == [5.0]


POISON = [
    b"[" * 100_000,  # RecursionError in json.loads
    b"1" * 5000,  # ValueError: an integer over 4,300 digits
    b'{"raw_value": 1, "meta": {"n": ' + b"9" * 5000 + b"}}",
    b'[{"raw_value": 1, "meta": {"n": ' + b"9" * 5000 + b"}}]",
    b'{"raw_value": 1, "meta": {"x": [1, NaN]}}',
    b'{"timestamp": "9999-12-31T23:59:59-14:00", "raw_value": 1}',
]


async def test_poison_messages_are_dead_lettered_and_acked(buffer: Buffer, sensor: str) -> None:
    t = topic(sensor)
    client = FakeClient()
    async with running(buffer, sensor, client) as (src, _):
        for i, payload in enumerate(POISON, start=1):
            client.deliver(message(t, payload, i))
        client.deliver(message(t, b"2.5", 100))
        await until(lambda: len(client.acked) == len(POISON) + 1)
        assert src.state == "connected" and client.connects == 1
    assert values(buffer) == [2.5]
    dead = buffer.dead_letters()
    assert len(dead) == len(POISON) and all(d["kind"] == "mqtt_payload" for d in dead)


async def test_an_unexpected_error_dead_letters_the_message_not_the_daemon(
    buffer: Buffer, sensor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(payload: bytes, *args: Any) -> Any:
        if payload == b"13":
            raise KeyError("a bug")
        return real(payload, *args)

    real = mqtt_module.parse_payload
    monkeypatch.setattr(mqtt_source, "parse_payload", broken)
    t = topic(sensor)
    client = FakeClient()
    async with running(buffer, sensor, client):
        client.deliver(message(t, b"13", 1), message(t, b"14", 2))
        await until(lambda: client.acked == [1, 2])
    assert values(buffer) == [14.0]
    assert "unexpected error: KeyError" in buffer.dead_letters()[0]["reason"]


async def test_the_source_survives_an_unexpected_failure(buffer: Buffer, sensor: str) -> None:
    client = FakeClient()
    calls = 0

    def flaky() -> FakeClient:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a session")
        return client

    async with running(buffer, sensor, client) as (src, _):
        src.make_client = flaky
        client.deliver(message(topic(sensor), b"1.5", 1))
        await until(lambda: client.acked == [1])
    assert calls == 2 and values(buffer) == [1.5]


async def test_a_full_buffer_holds_messages_and_takes_them_back_in_order_at_once(
    tmp_path: Any,
) -> None:
    buf = Buffer(tmp_path / "full.db")
    sid = str(uuid.uuid4())
    buf.upsert_sensor(sid, "t", "mqtt", "r", "s")
    buf.max_bytes = buf.used_bytes() + 30_000
    filler = 0
    while not isinstance(buf.commit([Write(backlog(sid, filler))])[0], BufferFull):
        filler += 100
    client = FakeClient()
    t = topic(sid)
    try:
        async with running(buf, sid, client) as (src, _):
            client.deliver(*(message(t, f"{1000 + i}".encode(), i + 1) for i in range(30)))
            await asyncio.sleep(0.5)
            assert client.acked == []  # refused: not acked, held (the broker keeps them)
            assert not src._intake.is_set()
            client.deliver(message(t, b"2000", 31))  # arrives while full: stays queued
            buf.seal(sid, 10_000)  # the cloud takes the backlog: room again
            while (b := buf.next_batch(sid)) is not None:
                buf.mark_synced(b.id, b.count, 0)
            started = asyncio.get_running_loop().time()
            await until(lambda: len(client.acked) == 31, timeout=5)
            took = asyncio.get_running_loop().time() - started
        assert client.acked == list(range(1, 32))
        got = [
            r[0]
            for r in buf.conn.execute(
                "SELECT raw_value FROM readings WHERE raw_value >= 1000 ORDER BY id"
            )
        ]
        assert got == [float(1000 + i) for i in range(30)] + [2000.0]
        assert took < 3, took  # not one message per second
    finally:
        buf.close()


def backlog(sid: str, start: int) -> list[NewReading]:
    return [NewReading(sid, T0, float(i % 1000)) for i in range(start, start + 100)]


async def test_a_slow_commit_makes_the_receive_loop_wait(
    buffer: Buffer, sensor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: what the daemon holds unacked is bounded; the rest stays in the client
    (whose intake the broker bounds with max_inflight_messages) and at the broker."""
    stalled = asyncio.Event()

    async def stall(self: Buffer, fn: Any, *args: Any, **kwargs: Any) -> Any:
        await stalled.wait()
        return fn(*args, **kwargs)

    monkeypatch.setattr(mqtt_source, "MAX_PENDING_ACKS", 10)
    monkeypatch.setattr(Buffer, "call", stall)
    client = FakeClient()
    async with running(buffer, sensor, client):
        client.deliver(*(message(topic(sensor), b"1", i) for i in range(1, 101)))
        await asyncio.sleep(0.3)
        waiting = client.queue.qsize()
        stalled.set()
        await until(lambda: len(client.acked) == 100)
    assert waiting >= 100 - 10 - 2


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    """An MQTT 3.1.1 PUBLISH, QoS 1, as the broker sends it."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + mid.to_bytes(2, "big") + payload
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (128 if n else 0))
        if not n:
            break
    return bytes([0x32]) + bytes(length) + body


def test_the_reader_handles_every_packet_that_arrived_before_the_socket_goes_quiet() -> None:
    """paho as the daemon drives it reads a chunk at a time: whatever it took from the socket
    is handled before the event loop's turn ends (a packet left in its buffer would wait for
    the next bytes from the broker), and packets that span several reads come out whole."""
    got: list[tuple[int, bytes]] = []
    client = mqtt_module.FastPaho(
        paho.CallbackAPIVersion.VERSION2, client_id="reader-test", clean_session=False
    )
    client.manual_ack_set(True)
    client.on_message = lambda c, u, m: got.append((m.mid, m.payload))
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # what connect() would have set
    big = b"x" * (3 * mqtt_module.READ_CHUNK + 17)
    sent = [(i, big if i in (5, 400) else f"{i}".encode()) for i in range(1, 801)]
    stream = b"".join(publish_packet("benchlink/t", p, mid) for mid, p in sent)
    writer = threading.Thread(target=broker.sendall, args=(stream,))
    writer.start()
    try:
        turns = 0
        # the event loop's view: the reader is called only while the socket is readable
        while len(got) < len(sent) and select.select([ours], [], [], 5)[0]:
            client.loop_read()
            turns += 1
        writer.join()
        assert got == sent
        assert turns < len(sent) / 2  # many packets per turn, not one
    finally:
        client._sock = None
        ours.close()
        broker.close()


def test_readings_without_a_timestamp_never_share_an_arrival_time(buffer: Buffer) -> None:
    """A burst of bare numbers (and a list of them) arrives at one instant; the cloud keeps
    one reading per sensor and timestamp, so each gets its own, in arrival order."""
    sid = str(uuid.uuid4())
    metrics = EdgeMetrics()
    src = MqttSource(MqttConfig(), [sensor_config(sid)], Writer(buffer, metrics), metrics)
    burst = [mqtt_module.Delivered(topic(sid), f"{i}.5".encode(), 1, i + 1) for i in range(5)]
    burst.append(mqtt_module.Delivered(topic(sid), b'[7, 8, {"value": 9}]', 1, 6))
    stamps = [r.timestamp for w in src.arrivals(burst) for r in w.readings]
    again = [r.timestamp for w in src.arrivals(burst[:2]) for r in w.readings]
    assert len(stamps) == 8 and stamps == sorted(set(stamps))
    assert again[0] > stamps[-1] and again[1] > again[0]  # the next burst comes after
