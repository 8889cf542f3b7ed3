"""Deployment files: the example config loads, the broker config runs, the unit is complete,
the daemon speaks sd_notify and shuts down gracefully, and every CLI command is documented."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from edge.cli import build_parser
from edge.config import load_config
from tests.edge.helpers import BIN, write_config
from tests.support.services import REPO, free_port, unavailable, wait_port

EDGE = REPO / "edge"


def test_example_config_has_the_spec_keys() -> None:
    cfg = load_config(EDGE / "edge.example.toml")
    assert cfg.cloud.url == "http://localhost:8002"
    assert cfg.buffer.max_bytes == 2_000_000_000 and cfg.sync.batch_size == 1000
    assert cfg.mqtt.client_id is None  # derived from the buffer: no two edges share one
    assert cfg.mqtt.session_expiry_s == 7 * 24 * 3600
    assert [s.source for s in cfg.sensors] == ["mqtt", "serial"]
    assert "replace-with" not in repr(cfg)  # tokens are redacted


def test_env_overrides_and_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCHLINK_EDGE_CLOUD__URL", "https://cloud.example.org/")
    monkeypatch.setenv("BENCHLINK_EDGE_SYNC__INTERVAL_S", "2.5")
    cfg = load_config(EDGE / "edge.example.toml")
    assert cfg.cloud.url == "https://cloud.example.org" and cfg.sync.interval_s == 2.5
    assert cfg.buffer.path == Path("/var/lib/benchlink/buffer.db")  # the file still applies
    monkeypatch.setenv("BENCHLINK_EDGE_CLOUD__URL", "https://u:p@cloud.example.org/?token=x")
    with pytest.raises(ValueError, match="credentials"):
        load_config(EDGE / "edge.example.toml")


def test_mosquitto_config_runs_and_never_drops_qos1(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        unavailable("Mosquitto", "binary not installed")
    text = (REPO / "mosquitto" / "mosquitto.conf").read_text()
    settings = dict(
        line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert settings["max_queued_messages"] == "0" and settings["max_queued_bytes"] == "0"
    assert settings["persistence"] == "true"
    # bounded, or a backlog is pushed into the daemon's memory all at once on reconnect
    assert 100 <= int(settings["max_inflight_messages"]) <= 2000
    port = free_port()
    text = text.replace("listener 1883", f"listener {port} 127.0.0.1")
    text = text.replace("/var/lib/mosquitto/", f"{tmp_path}/").replace(
        "log_dest syslog", "log_dest stderr"
    )
    conf = tmp_path / "m.conf"
    conf.write_text(text)
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        assert wait_port("127.0.0.1", port), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(5)


def test_systemd_unit() -> None:
    unit = (EDGE / "benchlink-edge.service").read_text()
    for line in (
        "Type=notify",
        "Restart=always",
        "User=benchlink",
        "SupplementaryGroups=dialout",
        "StateDirectory=benchlink",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
    ):
        assert line in unit.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+", unit, re.M)
    # reload re-reads the config; a config error (2: command line, 78: EX_CONFIG) stays down
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit.splitlines()
    (prevent,) = re.findall(r"^RestartPreventExitStatus=(.*)$", unit, re.M)
    assert {"2", "78"} <= set(prevent.split())
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert exec_start is not None
    args = exec_start.group(1).split()[1:]
    assert build_parser().parse_args(args).config == "/etc/benchlink/edge.toml"
    analyze = shutil.which("systemd-analyze")
    if analyze:
        out = subprocess.run(
            [analyze, "verify", "--man=no", str(EDGE / "benchlink-edge.service")],
            capture_output=True,
            text=True,
        )
        # the ExecStart binary does not exist on a build machine; nothing else may be wrong
        problems = [
            ln
            for ln in out.stderr.splitlines()
            if ln.strip() and "/opt/benchlink" not in ln and "ExecStart" not in ln
        ]
        assert not problems, out.stderr


def test_the_daemon_runs_with_two_malloc_arenas_wherever_it_is_deployed() -> None:
    """Set in the environment (glibc reads it at exec), by the unit and by the compose file."""
    unit = (EDGE / "benchlink-edge.service").read_text()
    assert "Environment=MALLOC_ARENA_MAX=2" in unit.splitlines()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["edge"]["environment"]["MALLOC_ARENA_MAX"] == "2"


def test_the_units_documentation_is_installed_by_pip_install(tmp_path: Path) -> None:
    """Documentation= points into the venv the docs install to (/opt/benchlink/venv): a fresh
    venv, `pip install .` as documented, and the file is where the unit says."""
    unit = (EDGE / "benchlink-edge.service").read_text()
    (doc,) = re.findall(r"^Documentation=(\S+)$", unit, re.M)
    prefix = "file:///opt/benchlink/venv/"
    assert doc.startswith(prefix), doc
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    out = subprocess.run(
        [*pip, "install", "--quiet", "--no-deps", str(REPO)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    installed = venv / doc.removeprefix(prefix)
    assert installed.read_text() == (REPO / "docs" / "edge.md").read_text()


def test_docs_cover_every_cli_command() -> None:
    doc = (REPO / "docs" / "edge.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        assert "benchlink-edge --config" in doc and f" {name}" in doc, name
        assert re.search(rf"benchlink-edge[^\n]* {name}\b", doc), f"{name} is not documented"
    assert "bytes per reading" in doc


def test_daemon_notifies_systemd_and_stops_gracefully(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    sid = str(uuid.uuid4())
    cfg = write_config(
        tmp_path / "edge.toml",
        cloud_url=f"http://127.0.0.1:{free_port()}",  # nothing there: the cloud is down
        buffer=tmp_path / "buffer.db",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # nor a broker: the daemon keeps trying
        sensors=[
            {
                "sensor_id": sid,
                "token": "t",
                "run_id": sid,
                "capture_session_id": sid,
                "source": "mqtt",
            }
        ],
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    log = tmp_path / "edge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "benchlink-edge"), "--config", str(cfg), "run"], stderr=out, env=env
        )
    try:
        messages = [sock.recv(100).decode() for _ in range(3)]
        assert messages[0] == "READY=1" and messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        rest = []
        while True:
            try:
                rest.append(sock.recv(100).decode())
            except TimeoutError:
                break
            if rest[-1] == "STOPPING=1":
                break
        assert "STOPPING=1" in rest
        text = log.read_text()
        assert "stopping: sources first" in text and "stopped" in text
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_every_benchlink_edge_command_in_the_docs_parses() -> None:
    """docs/edge.md word for word: each `benchlink-edge ...` line of its code blocks (the
    placeholders filled in, the [optional] parts included) is a valid command line."""
    doc = (REPO / "docs" / "edge.md").read_text()
    code = "\n".join(re.findall(r"^```\w*\n(.*?)^```", doc, re.M | re.S))
    fill = {"SENSOR_ID": str(uuid.uuid4()), "RUN": str(uuid.uuid4()), "SESSION": str(uuid.uuid4())}
    checked = 0
    for line in code.splitlines():
        words = shlex.split(line.replace("[", "").replace("]", ""), comments=True)
        at = next((i for i, w in enumerate(words) if w.endswith("benchlink-edge")), None)
        if at is None or {"systemctl", "journalctl"} & set(words):  # the unit's name
            continue
        args = [w for w in words[at + 1 :] if w != "..."]
        args = [
            fill.get(w)
            or (str(uuid.uuid4()) if w == "ID" and args[i - 1] == "--sensor" else None)
            or {"ID": "1", "N": "5"}.get(w, w)
            for i, w in enumerate(args)
        ]
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            raise AssertionError(f"docs/edge.md: {line!r} does not parse") from exc
        checked += 1
    assert checked >= 10
