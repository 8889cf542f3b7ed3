"""mosquitto/: the repo's broker config with conf.d/auth.conf, acl and passwords, on a real
Mosquitto - assembled the way the docker-compose service assembles it."""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.demo.conftest import REPO
from tests.support.mqtt import Publisher
from tests.support.services import Broker, free_port, unavailable, wait_port

MOSQ = REPO / "mosquitto"
COMPOSE = REPO / "docker-compose.yml"
DEVICE_A = str(uuid.uuid4())
DEVICE_B = str(uuid.uuid4())


def broker_config(text: str, tmp: Path, port: int) -> str:
    """A broker config of the repo with the port, paths and logging of this test."""
    lines = []
    for given in text.splitlines():
        line = given
        if given.startswith("listener "):
            line = f"listener {port} 127.0.0.1"
        elif given.startswith("persistence_location "):
            line = f"persistence_location {tmp}/"
        elif given.startswith(("log_dest ", "log_type ")):
            continue
        lines.append(line.replace("/run/benchlink-mosquitto", str(tmp)))
    return "\n".join([*lines, "log_dest stderr", ""])


def compose_script(tmp: Path, passwords: Path) -> str:
    """The docker-compose mosquitto service's start script, for this machine: the same
    commands with the container's paths replaced, and without what only a container needs
    (chown to the broker user, which give_to_broker_user does, and the exec of the broker)."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["mosquitto"]
    assert service["command"][:2] == ["sh", "-ec"]
    script = str(service["command"][2]).replace("$$", "$")  # Compose's escape of a literal $
    script = script.replace("/run/benchlink-mosquitto", str(tmp))
    script = script.replace("/benchlink/passwords", str(passwords))
    script = script.replace("/benchlink/mosquitto", str(MOSQ))
    kept = [
        line
        for line in script.splitlines()
        if not line.strip().startswith(("chown ", "exec mosquitto"))
    ]
    assert len(kept) == len(script.splitlines()) - 2, "the service's script changed: review"
    return "\n".join(kept)


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


def mosquitto_binary() -> str:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists() or not shutil.which("mosquitto_passwd"):
        unavailable("Mosquitto", "mosquitto / mosquitto_passwd are not installed")
    return binary


@contextlib.contextmanager
def running_broker(tmp_path: Path, conf_text: str) -> Iterator[int]:
    """Mosquitto with ``conf_text`` (adapted by broker_config) on a free port."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(broker_config(conf_text, tmp_path, port))
    give_to_broker_user(tmp_path)
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        if not wait_port("127.0.0.1", port):
            proc.kill()
            pytest.fail(f"mosquitto did not start: {proc.communicate()[1].decode()}")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.contextmanager
def compose_broker(source: Path) -> Iterator[int]:
    """The broker as the compose service starts it, with ``source`` as MOSQUITTO_PASSWORDS."""
    mosquitto_binary()
    # Not under pytest's tmp_path: its parents are private to root, and the broker is not root.
    tmp_path = Path(tempfile.mkdtemp(prefix="benchlink-mosq-acl-"))
    try:
        subprocess.run(["sh", "-ec", compose_script(tmp_path, source)], check=True)
        with running_broker(tmp_path, (tmp_path / "mosquitto.conf").read_text()) as port:
            yield port
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    source = tmp_path / "passwords.txt"
    source.write_text(
        (MOSQ / "passwords.example").read_text() + f"{DEVICE_A}:secret-a\n{DEVICE_B}:secret-b\n"
    )
    source.chmod(0o644)
    with compose_broker(source) as port:
        yield port


def login(port: int, username: str | None, password: str | None) -> int:
    """The CONNACK reason of a login (0 = accepted)."""
    with Publisher("127.0.0.1", port, username=username, password=password) as client:
        return client.rc


@pytest.fixture
def edge(broker: int) -> Iterator[queue.Queue[tuple[str, bytes]]]:
    """The edge daemon's login, subscribed to every sensor's readings."""
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    edge = Publisher("127.0.0.1", broker, username="benchlink-edge", password="change-me-edge")
    assert edge.rc == 0
    client = edge.client
    client.on_message = lambda c, u, m: got.put((m.topic, bytes(m.payload)))
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(codes)
    client.subscribe("benchlink/sensors/+/readings", qos=1)
    codes = subscribed.get(timeout=10)
    assert all(not code.is_failure for code in codes)  # type: ignore[attr-defined]
    yield got
    edge.close()


def publish(port: int, user: str, password: str, topic: str, payload: str) -> None:
    with Publisher("127.0.0.1", port, username=user, password=password) as client:
        assert client.rc == 0
        client.publish(topic, payload)


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
    with Publisher("127.0.0.1", broker, username=DEVICE_B, password="secret-b") as spy:
        assert spy.rc == 0
        spy.client.on_message = lambda c, u, m: got.put(bytes(m.payload))
        spy.client.subscribe("benchlink/sensors/+/readings", qos=1)
        publish(broker, DEVICE_A, "secret-a", topic(DEVICE_A), "23.0")
        with pytest.raises(queue.Empty):
            got.get(timeout=1.5)


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), (DEVICE_A, "wrong"), ("nobody", "secret-a")],
    ids=["anonymous", "wrong-password", "unknown-user"],  # the same on every xdist worker
)
def test_anonymous_and_wrong_credentials_are_refused(
    broker: int, user: str | None, password: str | None
) -> None:
    rc = login(broker, user, password)
    assert rc != 0  # 5 / 135: not authorized


def test_the_edge_login_announces_its_client_id_and_a_second_daemon_is_refused(
    broker: int, tmp_path: Path
) -> None:
    """Under this ACL the daemon (as benchlink-edge) can read and write its presence topic,
    so a second daemon with the same client id is refused here too; a device cannot fake it."""
    import re
    import subprocess as sp

    from tests.edge.helpers import (
        BIN,
        EdgeProcess,
        running,
        unbound_sensor,
        wait_for,
        write_config,
    )

    def config(name: str) -> Path:
        path = write_config(
            tmp_path / f"{name}.toml",
            cloud_url="http://127.0.0.1:9",
            buffer=tmp_path / f"{name}.db",
            mqtt_url=f"mqtt://127.0.0.1:{broker}",
            client_id="bench-acl",
            sensors=[unbound_sensor(DEVICE_A, "mqtt")],
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


def readme_password_commands() -> list[str]:
    """The ``mosquitto_passwd`` lines of mosquitto/README.md, in order."""
    text = (MOSQ / "README.md").read_text()
    block = text[text.index("## Credentials") :].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("mosquitto_passwd ")]


def test_the_readmes_password_file_logs_in_through_the_compose_service(tmp_path: Path) -> None:
    """The documented path: mosquitto_passwd as the README says, then the compose service's
    script on that file. Hashing those hashes again locked every client out."""
    passwords = tmp_path / "passwords"
    typed = {"benchlink-edge": "edge-pw", DEVICE_A: "device-a-pw"}
    commands = readme_password_commands()
    assert len(commands) == 3
    for command in commands:
        line = command.replace("mosquitto/passwords", str(passwords))
        line = line.replace("5a0c2c1e-0000-4000-8000-000000000001", DEVICE_A)
        line = line.replace("<sensor id>", DEVICE_B).replace("<password>", "device-b-pw")
        user = shlex.split(line)[-1]
        answer = f"{typed[user]}\n{typed[user]}\n" if user in typed else None
        subprocess.run(shlex.split(line), input=answer, text=True, check=True, timeout=10)
    assert "edge-pw" not in passwords.read_text()  # hashed by mosquitto_passwd

    with compose_broker(passwords) as port:
        for user, password in [*typed.items(), (DEVICE_B, "device-b-pw")]:
            rc = login(port, user, password)
            assert rc == 0, f"{user} was refused with the password the README set"
        rc = login(port, "benchlink-edge", "wrong")
        assert rc != 0


def test_a_file_mixing_hashed_and_plain_lines_works(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    answer = "edge-pw\nedge-pw\n"
    subprocess.run(
        ["mosquitto_passwd", "-c", str(passwords), "benchlink-edge"],
        input=answer,
        text=True,
        check=True,
        timeout=10,
    )
    with passwords.open("a") as f:
        f.write(f"# a device added by hand\n{DEVICE_A}:plain-a\n")
    with compose_broker(passwords) as port:
        for user, password in (("benchlink-edge", "edge-pw"), (DEVICE_A, "plain-a")):
            rc = login(port, user, password)
            assert rc == 0, user


def test_the_repos_mosquitto_conf_alone_lets_no_anonymous_client_in() -> None:
    """mosquitto.conf as a bare-metal broker would read it before its password file is set
    up: anonymous clients are refused (it used to say allow_anonymous true)."""
    mosquitto_binary()
    tmp_path = Path(tempfile.mkdtemp(prefix="benchlink-mosq-bare-"))
    try:
        with running_broker(tmp_path, (MOSQ / "mosquitto.conf").read_text()) as port:
            rc = login(port, None, None)
            assert rc != 0
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_make_demo_goes_on_without_mqtt_when_the_broker_wants_a_password(
    broker: int, mosquitto: Broker
) -> None:
    """The demo's device and edge log in without a password; a broker set up as mosquitto/
    is refuses them, and the demo must say so rather than die on its first publish."""
    from demo_mqtt import mqtt_broker

    url, why = mqtt_broker(f"mqtt://127.0.0.1:{broker}")
    assert url is None and "refuses clients without a password" in why
    assert mqtt_broker(mosquitto.url) == (mosquitto.url, "")  # an open test broker
    url, why = mqtt_broker(f"mqtt://127.0.0.1:{free_port()}")
    assert url is None and why.startswith("no broker at")
