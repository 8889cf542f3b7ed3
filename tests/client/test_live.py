"""``client.live()`` against a real cloud: readings as they arrive, and a connection dropped
by a server restart resumed after the last reading received, with no gap and no repeat."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from benchlink import Client, NotFound
from benchlink._live import Reading
from tests.client.conftest import QUICK, send_readings
from tests.support.cloud import CloudServer
from tests.support.proxy import proxy_to


@pytest.fixture(autouse=True)
def _cloud_back_up(cloud: CloudServer) -> Iterator[None]:
    yield
    if cloud.proc is None:
        cloud.start()


def _send(cloud: CloudServer, token: str, sensor_id: str, session: object, value: float) -> None:
    send_readings(cloud.url, token, sensor_id, session, [value], start=datetime.now(UTC))


def test_live_resumes_after_a_dropped_connection_without_gaps_or_repeats(
    cloud: CloudServer, client: Client
) -> None:
    new = client.sensors.create(
        "live",
        type="t",
        input_unit="mV",
        display_unit="C",
        profile={"kind": "linear", "payload": {"a": 1.0, "b": 0.0}},
    )
    session = client.experiments.create("e").runs.create().sessions.create()
    got: list[Reading] = []
    last_value = 1000.0
    cfg = client.config

    with (
        proxy_to(cloud.port) as network,
        Client(network.url, user=cfg.user, project=cfg.project, retry=QUICK) as viewer,
    ):

        def consume() -> None:
            for reading in viewer.live(sensor=new.sensor.id, timeout=60):
                got.append(reading)
                if reading.raw_value == last_value:
                    return

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        value, deadline = 0.0, time.monotonic() + 30
        while not got and time.monotonic() < deadline:  # until the subscription is open
            _send(cloud, new.token, new.sensor.id, session, value)
            value += 1
            time.sleep(0.2)
        assert got, "no reading arrived live"
        network.cut()  # the viewer's connection drops; the cloud goes on taking readings
        for _ in range(3):
            _send(cloud, new.token, new.sensor.id, session, value)
            value += 1
        time.sleep(1)  # the viewer tries to reconnect, and cannot
        network.restore()
        _send(cloud, new.token, new.sensor.id, session, last_value)
        consumer.join(60)

    assert not consumer.is_alive(), f"the stream stopped after {[r.raw_value for r in got]}"
    stored = list(client.runs.get(session.run_id).telemetry()["raw_value"])
    first = stored.index(got[0].raw_value)
    assert [r.raw_value for r in got] == stored[first:]
    assert len({r.id for r in got}) == len(got)
    assert got[-1].unit == "°C" and got[-1].timestamp.tzinfo is not None


@pytest.mark.parametrize(
    ("outage", "first_reading"),
    [("network", False), ("restart", False), ("restart", True)],
    ids=["network-before-any-reading", "restart-before-any-reading", "restart-after-one"],
)
def test_live_resumes_with_what_was_stored_while_it_was_away(
    cloud: CloudServer, client: Client, outage: str, first_reading: bool
) -> None:
    """Cut off (the network, or the cloud restarted) before any reading has arrived, or
    after one: every reading stored meanwhile arrives once, in order, then it follows live."""
    new = client.sensors.create(
        "away",
        type="t",
        input_unit="mV",
        display_unit="C",
        profile={"kind": "linear", "payload": {"a": 1.0, "b": 0.0}},
    )
    session = client.experiments.create("e").runs.create().sessions.create()
    got: list[Reading] = []
    cfg = client.config

    def send(values: list[float]) -> None:
        send_readings(cloud.url, new.token, new.sensor.id, session, values)

    with (
        proxy_to(cloud.port) as network,
        Client(network.url, user=cfg.user, project=cfg.project, retry=QUICK) as viewer,
    ):

        def consume() -> None:
            for reading in viewer.live(sensor=new.sensor.id, timeout=60):
                got.append(reading)
                if reading.raw_value == 1000.0:
                    return

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        assert network.messages.wait(30), "the stream never said it was subscribed"
        time.sleep(0.3)  # the client has read that message
        if first_reading:
            send([-1.0])
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
        network.cut()
        if outage == "restart":
            cloud.stop()
            cloud.start()
        send([1.0, 2.0])  # stored while the client cannot reach the cloud
        send([3.0])
        time.sleep(1)  # it tries to reconnect, and cannot
        network.restore()
        send([1000.0])
        consumer.join(60)

    assert not consumer.is_alive(), f"the stream stopped after {[r.raw_value for r in got]}"
    expected = [1.0, 2.0, 3.0, 1000.0]
    assert [r.raw_value for r in got] == ([-1.0, *expected] if first_reading else expected)
    # one commit position a batch ([1.0, 2.0] were sent together), growing batch by batch
    positions = [r.position for r in got[-4:]]
    assert positions[0] == positions[1] < positions[2] < positions[3], positions
    assert len({r.id for r in got}) == len(got)


def test_live_follows_across_a_server_restart(cloud: CloudServer, client: Client) -> None:
    new = client.sensors.create(
        "restart",
        type="t",
        input_unit="mV",
        display_unit="C",
        profile={"kind": "linear", "payload": {"a": 1.0, "b": 0.0}},
    )
    session = client.experiments.create("e").runs.create().sessions.create()
    got: list[float] = []

    def consume() -> None:
        for reading in client.live(sensor=new.sensor.id, timeout=60):
            got.append(reading.raw_value)
            if reading.raw_value == 500.0:
                return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    deadline = time.monotonic() + 30
    sent = 0.0  # until the stream carries one; each a value of its own (a slow first arrival
    while not got and time.monotonic() < deadline:  # meant two 0.0 readings: "twice")
        _send(cloud, new.token, new.sensor.id, session, sent)
        sent += 1
        time.sleep(0.2)
    cloud.stop()  # closes the stream (1001, going away)
    cloud.start()
    _send(cloud, new.token, new.sensor.id, session, 500.0)
    consumer.join(60)
    assert not consumer.is_alive() and got[-1] == 500.0
    assert len(got) == len(set(got))  # nothing twice


def test_live_for_a_run_of_another_project_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        next(client.live(run=uuid.uuid4(), timeout=5))  # refused at the handshake
