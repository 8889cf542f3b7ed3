"""MQTT identity and session life on a real Mosquitto: a client id unique per edge, a second
daemon with a held id refused, a session that expires, a demo that removes its session."""

from __future__ import annotations

import getpass
import json
import queue
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.buffer import Buffer
from edge.sources.mqtt import default_client_id
from tests.edge.helpers import (
    BIN,
    EdgeProcess,
    running,
    stored_values,
    unbound_sensor,
    wait_for,
    write_config,
)
from tests.support.mqtt import Publisher
from tests.support.services import REPO, Broker, free_port, wait_port

pytestmark = pytest.mark.mqtt


def mqtt_config(
    tmp: Path,
    name: str,
    broker: Broker,
    sensor_id: str,
    client_id: str | None,
    extra_mqtt: str = "",
) -> Path:
    path = write_config(
        tmp / f"{name}.toml",
        cloud_url="http://127.0.0.1:9",  # no cloud: the readings stay in the buffer
        buffer=tmp / f"{name}.db",
        mqtt_url=broker.url,
        client_id=client_id,
        sensors=[unbound_sensor(sensor_id, "mqtt")],
    )
    text = path.read_text()
    if client_id is None:  # the helper always writes one: take it out
        text = re.sub(r'(?m)^client_id = ".*"\n', "", text)
    path.write_text(text.replace(f'url = "{broker.url}"\n', f'url = "{broker.url}"\n{extra_mqtt}'))
    return path


def client_id_in_log(edge: EdgeProcess) -> str:
    return re.findall(r"MQTT: connected to \S+ as (\S+)", edge.log.read_text())[-1]


def connections(edge: EdgeProcess) -> int:
    return edge.log.read_text().count("MQTT: connected")


def edge_id(buffer: Path) -> str:
    buf = Buffer(buffer)
    try:
        return buf.edge_id()
    finally:
        buf.close()


def v5_client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)


def publish(broker: Broker, topic: str, payloads: list[bytes], *, retain: bool = False) -> None:
    with Publisher(broker.host, broker.port, v5=True) as client:
        for payload in payloads:
            assert client.publish(topic, payload, retain=retain)


def resume(broker: Broker, client_id: str, topic: str, wait_s: float = 1.5) -> tuple[bool, int]:
    """Connect as ``client_id`` without a clean start: (session present, messages queued
    for it). Ends the session afterwards."""
    client = v5_client(client_id)
    present: queue.Queue[bool] = queue.Queue()
    got: list[bytes] = []
    client.on_connect = lambda c, u, flags, rc, props: present.put(flags.session_present)
    client.on_message = lambda c, u, m: got.append(m.payload)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    client.loop_start()
    try:
        session = present.get(timeout=10)
        time.sleep(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return session, len(got)


def test_the_default_client_id_is_each_buffers_own(mosquitto: Broker, tmp_path: Path) -> None:
    a_sensor, b_sensor = str(uuid.uuid4()), str(uuid.uuid4())
    a = EdgeProcess(mqtt_config(tmp_path, "a", mosquitto, a_sensor, None), tmp_path / "a.log")
    b = EdgeProcess(mqtt_config(tmp_path, "b", mosquitto, b_sensor, None), tmp_path / "b.log")
    with running(a), running(b):
        wait_for(lambda: connections(a) == 1 and connections(b) == 1, 30, "both connected")
        ids = client_id_in_log(a), client_id_in_log(b)
        assert ids == (
            default_client_id(edge_id(tmp_path / "a.db")),
            default_client_id(edge_id(tmp_path / "b.db")),
        )
        assert ids[0] != ids[1]
        assert all(len(i) <= 23 for i in ids)
        assert f"MQTT client id {ids[0]}" in a.cli("status").stdout  # the operator sees it
        publish(mosquitto, f"benchlink/sensors/{a_sensor}/readings", [b"1.5", b"2.5"])
        wait_for(lambda: stored_values(tmp_path / "a.db") == [1.5, 2.5], 20, "a's readings")
        assert connections(a) == 1 and connections(b) == 1  # nobody took anybody's session
        assert a.terminate() == 0
        a.start()  # the same buffer: the same id, the same session
        wait_for(lambda: connections(a) == 2, 30, "a again")
        assert client_id_in_log(a) == ids[0]


def test_a_second_daemon_with_a_held_client_id_is_refused(
    mosquitto: Broker, tmp_path: Path
) -> None:
    sensor = str(uuid.uuid4())
    topic = f"benchlink/sensors/{sensor}/readings"
    first = EdgeProcess(
        mqtt_config(tmp_path, "first", mosquitto, sensor, "bench-01"), tmp_path / "first.log"
    )
    second_cfg = mqtt_config(tmp_path, "second", mosquitto, sensor, "bench-01")
    with running(first):
        wait_for(lambda: connections(first) == 1, 30, "the first daemon")
        assert first.proc is not None
        started = time.monotonic()
        second = subprocess.run(
            [str(BIN / "benchlink-edge"), "--config", str(second_cfg), "run"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert time.monotonic() - started < 30
        assert second.returncode != 0
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("benchlink-edge: MQTT client id 'bench-01' is held by another")
        assert f"pid {first.proc.pid}" in last
        assert "Traceback" not in second.stderr
        assert "MQTT: connected" not in second.stderr  # it never took the session
        # The first daemon kept its session: every message once, in its buffer only.
        values = [float(i) for i in range(300)]
        publish(mosquitto, topic, [str(v).encode() for v in values])
        wait_for(lambda: len(stored_values(tmp_path / "first.db")) >= 300, 30, "300 readings")
        time.sleep(0.5)
        assert stored_values(tmp_path / "first.db") == values
        assert connections(first) == 1
        first.kill9()  # its will clears the presence: the id is free again
        publish(mosquitto, topic, [b"301"])  # queued in the session, for whoever holds it
    with running(EdgeProcess(second_cfg, tmp_path / "second.log")) as second_edge:
        wait_for(lambda: connections(second_edge) == 1, 30, "the second daemon, now")
        wait_for(lambda: stored_values(tmp_path / "second.db") == [301.0], 20, "the queued message")
    assert stored_values(tmp_path / "second.db") == [301.0]


def test_presence_of_this_buffer_is_no_conflict(mosquitto: Broker, tmp_path: Path) -> None:
    """A presence left by this edge's own earlier life (killed before the broker noticed)
    does not block it; another edge's presence does."""
    cfg = mqtt_config(tmp_path, "e", mosquitto, str(uuid.uuid4()), "bench-07")
    Buffer(tmp_path / "e.db").close()
    presence = "benchlink/edge/bench-07/alive"
    own = {"edge": edge_id(tmp_path / "e.db"), "pid": 1, "host": "x", "since": "then"}
    publish(mosquitto, presence, [json.dumps(own).encode()], retain=True)
    with running(EdgeProcess(cfg, tmp_path / "e.log")) as edge:
        wait_for(lambda: connections(edge) == 1, 30, "connected over its own old presence")
        assert edge.terminate() == 0
    other = {**own, "edge": str(uuid.uuid4()), "pid": 4242}
    publish(mosquitto, presence, [json.dumps(other).encode()], retain=True)
    done = subprocess.run(
        [str(BIN / "benchlink-edge"), "--config", str(cfg), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "pid 4242" in done.stderr.strip().splitlines()[-1]


def test_the_session_expires_and_the_broker_stops_queueing(
    mosquitto: Broker, tmp_path: Path
) -> None:
    sensor = str(uuid.uuid4())
    topic = f"benchlink/sensors/{sensor}/readings"
    for client_id, expiry, after in (("edge-keeps", 3600, 0.0), ("edge-expires", 2, 4.0)):
        cfg = mqtt_config(
            tmp_path, client_id, mosquitto, sensor, client_id, f"session_expiry_s = {expiry}\n"
        )
        with running(EdgeProcess(cfg, tmp_path / f"{client_id}.log")) as edge:
            wait_for(lambda e=edge: connections(e) == 1, 30, "connected")  # type: ignore[misc]
            assert edge.terminate() == 0
        time.sleep(after)
        publish(mosquitto, topic, [b"1", b"2", b"3"])
        session, queued = resume(mosquitto, client_id, topic)
        if expiry == 3600:  # the control: a live session queues while the daemon is down
            assert (session, queued) == (True, 3)
        else:
            assert (session, queued) == (False, 0)


def test_the_demo_removes_its_edge_session(mosquitto: Broker) -> None:
    sys.path.insert(0, str(REPO / "bin"))
    try:
        from demo_mqtt import forget_mqtt_session
    finally:
        sys.path.remove(str(REPO / "bin"))
    client_id = f"benchlink-demo-{uuid.uuid4()}"
    topic = f"benchlink/sensors/{uuid.uuid4()}/readings"
    # the demo edge's session, as the daemon leaves it: persistent, subscribed, disconnected
    edge = v5_client(client_id)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    edge.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
    edge.loop_start()
    subscribed: queue.Queue[Any] = queue.Queue()
    edge.on_subscribe = lambda *args: subscribed.put(args)
    edge.subscribe(topic, qos=1)
    subscribed.get(timeout=10)
    edge.disconnect()
    edge.loop_stop()
    publish(mosquitto, topic, [b"1", b"2"])
    forget_mqtt_session(mosquitto.url, client_id)
    publish(mosquitto, topic, [b"3"])
    assert resume(mosquitto, client_id, topic) == (False, 0)


def test_a_broker_that_denies_the_presence_topic_still_gets_the_daemon(tmp_path: Path) -> None:
    """An ACL written before the presence topic existed: the check is off (a warning), the
    daemon connects and stores readings as before."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    (tmp_path / "acl").write_text("topic readwrite benchlink/sensors/+/readings\n")
    (tmp_path / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {tmp_path / 'acl'}\n"
        # run as the user who started it: the test's directory is private to that user
        f"user {getpass.getuser()}\n"
        "log_dest stderr\nlog_type error\n"
    )
    broker = subprocess.Popen([binary, "-c", str(tmp_path / "mosquitto.conf")])
    try:
        assert wait_port("127.0.0.1", port)
        url = Broker("127.0.0.1", port, "")
        sensor = str(uuid.uuid4())
        cfg = mqtt_config(tmp_path, "e", url, sensor, "bench-old-acl")
        with running(EdgeProcess(cfg, tmp_path / "e.log")) as edge:
            wait_for(lambda: connections(edge) >= 1, 30, "connected")
            assert "could not read benchlink/edge/bench-old-acl/alive" in edge.log.read_text()
            publish(url, f"benchlink/sensors/{sensor}/readings", [b"4.5"])
            wait_for(lambda: stored_values(tmp_path / "e.db") == [4.5], 20, "the reading")
            assert connections(edge) == 1  # connected once, and stayed
    finally:
        broker.terminate()
        broker.wait(10)
