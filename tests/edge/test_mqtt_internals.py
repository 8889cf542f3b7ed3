"""The private names of paho and aiomqtt that the MQTT fast path (edge/sources/mqtt/fastpath.py,
each place marked PRIVATE) relies on: present, with the signatures it calls them with, on the
exact versions pyproject pins. An upgrade that moves one fails here, by name, instead of
silently slowing down or breaking the acks. To move a pin: change it, run this file and
tests/edge/test_mqtt_source.py, and adapt fastpath.py where this fails."""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from importlib.metadata import version

import aiomqtt
import paho.mqtt.client as paho
import pytest

from edge.sources.mqtt.fastpath import BurstClient, FastPaho
from tests.support.services import REPO

#: method -> its parameters, as the fast path overrides or calls it
PAHO_METHODS = {
    "_sock_recv": ["self", "bufsize"],
    "_packet_read": ["self"],
    "_loop_rc_handle": ["self", "rc"],
    "_handle_on_message": ["self", "message"],
    "_packet_queue": ["self", "command", "packet", "mid", "qos", "info"],
    "loop_read": ["self", "max_packets"],
}
#: attributes every paho client has once built
PAHO_ATTRIBUTES = ("_sock", "_on_message", "_in_callback_mutex", "_userdata")
AIOMQTT_ATTRIBUTES = ("_client", "_disconnected", "_loop")


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for spec in project["dependencies"]:
        if m := re.fullmatch(r"(aiomqtt|paho-mqtt)==([\w.]+)", spec):
            pins[m[1]] = m[2]
    return pins


def test_both_libraries_are_pinned_to_the_installed_versions() -> None:
    pins = _pins()
    assert set(pins) == {"aiomqtt", "paho-mqtt"}, "pyproject must pin both exactly (==)"
    for name, pinned in pins.items():
        assert version(name) == pinned, f"{name} {version(name)} installed, {pinned} pinned"


@pytest.mark.parametrize("name", PAHO_METHODS)
def test_the_paho_methods_have_the_expected_signatures(name: str) -> None:
    method = getattr(paho.Client, name, None)
    assert method is not None, f"paho.Client.{name} is gone"
    assert list(inspect.signature(method).parameters) == PAHO_METHODS[name]


def test_a_paho_client_has_the_attributes_the_fast_path_reads() -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    for name in PAHO_ATTRIBUTES:
        assert hasattr(client, name), f"paho.Client().{name} is gone"
    # the class swap keeps every attribute paho's __init__ set: FastPaho adds none
    own = {k for k, v in vars(FastPaho).items() if not callable(v) and not k.startswith("__")}
    assert not own & set(vars(client)), "FastPaho's class attributes shadow paho's own"


async def test_aiomqtt_builds_a_plain_paho_client_and_wires_its_callback() -> None:
    client = BurstClient("127.0.0.1", 1)
    for name in AIOMQTT_ATTRIBUTES:
        assert hasattr(client, name), f"aiomqtt.Client().{name} is gone"
    assert isinstance(client._disconnected, asyncio.Future)
    # aiomqtt built paho's client itself (a plain paho.Client), which became a FastPaho
    assert type(client._client) is FastPaho
    # and gave it its _on_message as the message callback: the burst queue's override
    assert client._client.on_message == client._on_message
    base = inspect.signature(aiomqtt.Client._on_message).parameters
    assert list(base) == ["self", "client", "userdata", "message"]
