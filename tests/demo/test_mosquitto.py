"""mosquitto/: the repo's broker config with conf.d/auth.conf, acl and passwords, on a real
Mosquitto - assembled the way the docker-compose service assembles it."""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.demo.conftest import REPO
from tests.support.services import free_port, unavailable, wait_port

MOSQ = REPO / "mosquitto"
DEVICE_A = str(uuid.uuid4())
DEVICE_B = str(uuid.uuid4())


def broker_config(tmp: Path, port: int) -> str:
    """mosquitto.conf + conf.d/auth.conf, with the port, paths and logging of this test."""
    base = []
    for line in (MOSQ / "mosquitto.conf").read_text().splitlines():
        if line.startswith("listener "):
            line = f"listener {port} 127.0.0.1"
        elif line.startswith("persistence_location "):
            line = f"persistence_location {tmp}/"
        elif line.startswith(("log_dest ", "log_type ")):
            continue
        base.append(line)
    auth = (MOSQ / "conf.d" / "auth.conf").read_text().replace("/run/benchlink-mosquitto", str(tmp))
    auth = auth.replace("log_dest stdout", "log_dest stderr")
    return "\n".join(base) + "\n" + auth


def give_to_broker_user(tmp_path: Path) -> None:
    """Started as root, Mosquitto drops to the ``mosquitto`` user before it reads the password
    and ACL files, so (as in the compose service) that user must own them."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in (tmp_path, *tmp_path.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)


@pytest.fixture
def broker() -> Iterator[int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists() or not shutil.which("mosquitto_passwd"):
        unavailable("Mosquitto", "mosquitto / mosquitto_passwd are not installed")
    # Not under pytest's tmp_path: its parents are private to root, and the broker is not root.
    tmp_path = Path(tempfile.mkdtemp(prefix="benchlink-mosq-acl-"))
    tmp_path.chmod(0o700)
    source = tmp_path / "passwords.txt"
    source.write_text(
        (MOSQ / "passwords.example").read_text() + f"{DEVICE_A}:secret-a\n{DEVICE_B}:secret-b\n"
    )
    # What the compose service does before starting the broker: drop the comments (which
    # mosquitto_passwd calls corrupt) and hash the plain-text passwords in place.
    passwords = tmp_path / "passwords"
    with passwords.open("wb") as out:
        subprocess.run(["grep", "-Ev", r"^[[:space:]]*(#|$)", str(source)], stdout=out, check=True)
    subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True)
    assert "change-me" not in passwords.read_text()
    shutil.copy(MOSQ / "acl", tmp_path / "acl")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(broker_config(tmp_path, port))
    give_to_broker_user(tmp_path)
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        if not wait_port("127.0.0.1", port):
            proc.kill()
            pytest.fail(f"mosquitto did not start: {proc.communicate()[1].decode()}")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp_path, ignore_errors=True)


def connect(port: int, username: str | None, password: str | None) -> tuple[mqtt.Client, int]:
    """A connected client, and the CONNACK reason (0 = accepted)."""
    result: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    if username:
        client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: result.put(rc.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, result.get(timeout=10)


@pytest.fixture
def edge(broker: int) -> Iterator[queue.Queue[tuple[str, bytes]]]:
    """The edge daemon's login, subscribed to every sensor's readings."""
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    client, rc = connect(broker, "benchlink-edge", "change-me-edge")
    assert rc == 0
    client.on_message = lambda c, u, m: got.put((m.topic, bytes(m.payload)))
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(codes)
    client.subscribe("benchlink/sensors/+/readings", qos=1)
    codes = subscribed.get(timeout=10)
    assert all(not code.is_failure for code in codes)  # type: ignore[attr-defined]
    yield got
    client.loop_stop()
    client.disconnect()


def publish(port: int, user: str, password: str, topic: str, payload: str) -> None:
    client, rc = connect(port, user, password)
    assert rc == 0
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def topic(sensor: str) -> str:
    return f"benchlink/sensors/{sensor}/readings"


def test_a_device_publishes_to_its_own_sensor_topic(
    broker: int, edge: queue.Queue[tuple[str, bytes]]
) -> None:
    publish(broker, DEVICE_A, "secret-a", topic(DEVICE_A), "21.5")
    assert edge.get(timeout=5) == (topic(DEVICE_A), b"21.5")


def test_a_device_cannot_publish_to_another_sensors_topic(
    broker: int, edge: queue.Queue[tuple[str, bytes]]
) -> None:
    publish(broker, DEVICE_A, "secret-a", topic(DEVICE_B), "99")  # denied: dropped silently
    publish(broker, "benchlink-edge", "change-me-edge", topic(DEVICE_A), "98")  # edge: read only
    publish(broker, DEVICE_B, "secret-b", topic(DEVICE_B), "22.0")  # the control
    assert edge.get(timeout=5) == (topic(DEVICE_B), b"22.0")
    assert edge.empty()


def test_a_device_cannot_read_other_readings(broker: int) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    spy, rc = connect(broker, DEVICE_B, "secret-b")
    assert rc == 0
    spy.on_message = lambda c, u, m: got.put(bytes(m.payload))
    spy.subscribe("benchlink/sensors/+/readings", qos=1)
    publish(broker, DEVICE_A, "secret-a", topic(DEVICE_A), "23.0")
    with pytest.raises(queue.Empty):
        got.get(timeout=1.5)
    spy.loop_stop()
    spy.disconnect()


@pytest.mark.parametrize(
    ("user", "password"), [(None, None), (DEVICE_A, "wrong"), ("nobody", "secret-a")]
)
def test_anonymous_and_wrong_credentials_are_refused(
    broker: int, user: str | None, password: str | None
) -> None:
    client, rc = connect(broker, user, password)
    client.loop_stop()
    assert rc != 0  # 5 / 135: not authorized


def test_the_edge_login_announces_its_client_id_and_a_second_daemon_is_refused(
    broker: int, tmp_path: Path
) -> None:
    """Under this ACL the daemon (as benchlink-edge) can read and write its presence topic,
    so a second daemon with the same client id is refused here too; a device cannot fake it."""
    import re
    import subprocess as sp

    from tests.edge.helpers import BIN, EdgeProcess, running, wait_for, write_config

    def config(name: str) -> Path:
        path = write_config(
            tmp_path / f"{name}.toml",
            cloud_url="http://127.0.0.1:9",
            buffer=tmp_path / f"{name}.db",
            mqtt_url=f"mqtt://127.0.0.1:{broker}",
            client_id="bench-acl",
            sensors=[
                {
                    "sensor_id": DEVICE_A,
                    "token": "t",
                    "run_id": str(uuid.uuid4()),
                    "capture_session_id": str(uuid.uuid4()),
                    "source": "mqtt",
                }
            ],
        )
        text = path.read_text().replace(
            'client_id = "bench-acl"\n',
            'client_id = "bench-acl"\nusername = "benchlink-edge"\npassword = "change-me-edge"\n',
        )
        path.write_text(text)
        return path

    publish(broker, DEVICE_B, "secret-b", "benchlink/edge/bench-acl/alive", "{}")  # denied
    first = EdgeProcess(config("first"), tmp_path / "first.log")
    with running(first):
        wait_for(lambda: "MQTT: connected" in first.log.read_text(), 30, "the daemon")
        assert "not authorised" not in first.log.read_text()
        assert first.proc is not None
        second = sp.run(
            [str(BIN / "benchlink-edge"), "--config", str(config("second")), "run"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        last = second.stderr.strip().splitlines()[-1]
        assert re.search(rf"is held by another .* \(pid {first.proc.pid} on ", last), last
