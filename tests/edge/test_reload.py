"""Reload (SIGHUP, the unit's ExecReload): a rotated token takes effect without a restart, and
`dead-letter retry` then delivers what the old token got dead-lettered -- against the real
cloud, Mosquitto and the daemon as a real process. Also: an invalid config on reload, and the
warning about a config readable by others."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_config
from edge.daemon import config_changes
from tests.edge.helpers import Bound, EdgeProcess, RealCloud, running, wait_for, write_config
from tests.edge.test_integration_mqtt import connected, mqtt_sensor, topic
from tests.support.mqtt import Publisher
from tests.support.services import Broker, free_port

pytestmark = pytest.mark.mqtt


def configure(path: Path, cloud_url: str, broker_url: str, *sensors: dict[str, Any]) -> Path:
    cfg = write_config(
        path,
        cloud_url=cloud_url,
        buffer=path.parent / "buffer.db",
        mqtt_url=broker_url,
        sensors=list(sensors),
        batch_size=7,
        client_id="edge-hup",  # the same in every version of the file
    )
    path.chmod(0o600)
    return cfg


def status(edge: EdgeProcess) -> dict[str, Any]:
    out = edge.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def hup(edge: EdgeProcess, times: int) -> None:
    assert edge.proc is not None
    edge.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: len(re.findall(r"reload(?::| refused)", edge.log.read_text())) >= times,
        20,
        "the reload's log line",
    )


def test_a_rotated_token_applies_on_reload_and_retry_delivers_every_dead_batch_once(
    mosquitto: Broker, cloud: RealCloud, tmp_path: Path
) -> None:
    (a,) = cloud.bootstrap(1)
    path = tmp_path / "edge.toml"
    configure(path, cloud.url, mosquitto.url, mqtt_sensor(a, token="bl_rotated-away"))
    edge = EdgeProcess(path, tmp_path / "edge.log")
    total = 56  # 8 batches of 7 when published at once
    with running(edge):
        wait_for(lambda: connected(edge), 20, "the MQTT subscription")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            for seq in range(total):
                payload = json.dumps({"raw_value": float(seq), "meta": {"seq": seq}})
                assert pub.publish(topic(a), payload)
        finally:
            pub.close()
        wait_for(lambda: status(edge)["sensors"][a.sensor_id]["dead"] == total, 30, "401 -> dead")
        dead_batches = len(json.loads(edge.cli("dead-letter", "list", "--json").stdout))
        assert dead_batches >= 8 and "401" in edge.cli("dead-letter", "list").stdout
        assert "reload the daemon" in edge.log.read_text()  # what to do about it
        assert "then run `benchlink-edge dead-letter retry`" in edge.log.read_text()

        configure(path, cloud.url, mosquitto.url, mqtt_sensor(a))  # the sensor's real token
        hup(edge, 1)
        log = edge.log.read_text()
        assert f"reload: applied sensor {a.sensor_id} token\n" in log
        assert "applied only after a restart" not in log
        assert a.token not in log
        with contextlib.closing(sqlite3.connect(tmp_path / "buffer.db")) as db:
            (token,) = db.execute(
                "SELECT token FROM sensors WHERE sensor_id = ?", (a.sensor_id,)
            ).fetchone()
        assert token == a.token  # the daemon's sends use it from now on

        retried = edge.cli("dead-letter", "retry")
        assert retried.returncode == 0, retried.stderr
        assert f"{dead_batches} batch(es) queued again" in retried.stdout
        wait_for(lambda: len(cloud.telemetry(a)) >= total, 30, "the retried batches")
        time.sleep(1.0)  # a batch sent twice, or dead-lettered again, would show now
        after = status(edge)
        assert edge.proc is not None and edge.proc.poll() is None  # never restarted
    seqs = sorted(int(i["meta"]["seq"]) for i in cloud.telemetry(a))
    assert seqs == list(range(total))  # all arrived, exactly once
    s = after["sensors"][a.sensor_id]
    assert (s["synced"], s["dead"], s["pending"], s["inflight"]) == (total, 0, 0, 0)
    assert "Traceback" not in edge.log.read_text()


def test_an_invalid_config_on_reload_is_refused_in_one_line_and_the_daemon_goes_on(
    mosquitto: Broker, cloud: RealCloud, tmp_path: Path
) -> None:
    a, b = cloud.bootstrap(2)
    path = tmp_path / "edge.toml"
    configure(path, cloud.url, mosquitto.url, mqtt_sensor(a))
    edge = EdgeProcess(path, tmp_path / "edge.log")
    with running(edge):
        wait_for(lambda: connected(edge), 20, "the MQTT subscription")
        good = path.read_text()
        path.write_text(good.replace("[sync]", "[sync\nbatch_size = 3"))  # a TOML syntax error
        hup(edge, 1)
        path.write_text(good.replace("timeout_s = 5", "timeout_s = 5\nurll = 'x'"))  # a typo
        hup(edge, 2)
        # valid, with changes a reload cannot apply: each is named
        configure(path, f"http://127.0.0.1:{free_port()}", mosquitto.url, mqtt_sensor(a),
                  mqtt_sensor(b))  # fmt: skip
        hup(edge, 3)
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            assert pub.publish(topic(a), json.dumps({"raw_value": 1.0, "meta": {"seq": 0}}))
        finally:
            pub.close()
        # still running on the first config: its cloud URL, its sensor
        wait_for(lambda: len(cloud.telemetry(a)) == 1, 30, "a reading synced after the reloads")
        assert edge.proc is not None and edge.proc.poll() is None
    lines = edge.log.read_text().splitlines()
    refused = [ln for ln in lines if "reload refused" in ln]
    assert len(refused) == 2, lines
    assert f"{path}:" in refused[0] and "TOML syntax error" in refused[0]
    assert f"{path}:" in refused[1] and "cloud.urll: unknown key" in refused[1]
    (later,) = [ln for ln in lines if "applied only after a restart" in ln]
    assert "cloud.url" in later and f"sensor {b.sensor_id} added" in later
    assert "Traceback" not in "\n".join(lines)


def test_a_config_with_tokens_readable_by_others_is_warned_about_at_start_and_reload(
    tmp_path: Path,
) -> None:
    b = Bound("6d3c1e52-6f8e-4f0e-9a43-1f0e0c2b7a11", "bl_secret", *["7a0c1e52-6f8e-4f0e-9a43-1f0e0c2b7a11"] * 3, {})  # fmt: skip
    path = tmp_path / "edge.toml"
    nowhere = f"http://127.0.0.1:{free_port()}"
    configure(path, nowhere, f"mqtt://127.0.0.1:{free_port()}", mqtt_sensor(b))
    path.chmod(0o644)
    edge = EdgeProcess(path, tmp_path / "edge.log")
    with running(edge):
        wait_for(lambda: "running with" in edge.log.read_text(), 20, "the start")
        hup(edge, 1)
        path.chmod(0o600)
        hup(edge, 2)
    lines = edge.log.read_text().splitlines()
    warnings = [ln for ln in lines if "readable by" in ln]
    assert len(warnings) == 2, lines  # at the start and at the first reload, not after chmod
    assert "WARNING" in warnings[0] and f"chmod 600 {path}" in warnings[0]
    assert "mode 0644" in warnings[0] and "bl_secret" not in "\n".join(lines)


def test_a_config_private_to_its_user_or_group_is_not_warned_about(tmp_path: Path) -> None:
    b = Bound("6d3c1e52-6f8e-4f0e-9a43-1f0e0c2b7a12", "t", *["7a0c1e52-6f8e-4f0e-9a43-1f0e0c2b7a12"] * 3, {})  # fmt: skip
    path = tmp_path / "edge.toml"
    configure(path, f"http://127.0.0.1:{free_port()}", f"mqtt://127.0.0.1:{free_port()}",
              mqtt_sensor(b))  # fmt: skip
    assert path.stat().st_gid == os.getegid()
    path.chmod(0o640)  # the documented 0640 root:benchlink, read through the daemon's group
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    edge = EdgeProcess(path, tmp_path / "edge.log")
    with running(edge):
        wait_for(lambda: "running with" in edge.log.read_text(), 20, "the start")
    assert "readable by" not in edge.log.read_text()


def test_config_changes_sorts_live_settings_from_restart_ones(tmp_path: Path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    sensor = {"sensor_id": ids[0], "token": "a", "run_id": ids[1], "capture_session_id": ids[1],
              "source": "serial", "port": "/dev/ttyUSB0"}  # fmt: skip
    old = load_config(configure(tmp_path / "old.toml", "http://x", "mqtt://y", sensor))
    changed = {**sensor, "token": "b", "run_id": ids[2], "baudrate": 115200}
    new = load_config(configure(tmp_path / "new.toml", "http://z", "mqtt://y", changed))
    live, restart = config_changes(old, new)
    assert [(str(s.sensor_id), fields) for s, fields in live] == [(ids[0], ["token", "run_id"])]
    assert restart == ["cloud.url", f"sensor {ids[0]} baudrate"]
