"""benchlink-edge as a user (or a unit file) runs it: mistakes get one line on stderr saying
what is wrong, where and what to do -- never a traceback -- and an exit code systemd does not
restart on; --config and --log-level work before or after the command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from edge.buffer import Buffer
from edge.cli import EXIT_CONFIG, build_parser
from tests.edge.helpers import BIN, wait_for, write_config
from tests.support.services import free_port

EDGE = str(BIN / "benchlink-edge")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("BENCHLINK_EDGE_")}


def edge(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGE, *args], capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})}
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def config(tmp_path: Path, extra: str = "", **kw: object) -> Path:
    sid = str(uuid.uuid4())
    path = write_config(
        tmp_path / "edge.toml",
        cloud_url=f"http://127.0.0.1:{free_port()}",
        buffer=tmp_path / "buffer.db",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        sensors=[
            {
                "token": "bl_s3cr3t",
                "sensor_id": sid,
                "run_id": sid,
                "capture_session_id": sid,
                "source": "mqtt",
                **kw,
            }
        ],
        extra=extra,
    )
    path.chmod(0o600)
    return path


def test_a_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = config(tmp_path)
    lines = path.read_text().splitlines()
    lines.insert(3, "batch_size = = 5")  # line 4
    path.write_text("\n".join(lines))
    out = edge("--config", str(path), "status")
    assert out.returncode == EXIT_CONFIG
    line = one_line(out)
    assert f"{path}:4:" in line and "TOML syntax error" in line and "fix" in line


def test_a_misspelled_key_names_file_line_key_and_the_known_keys(tmp_path: Path) -> None:
    path = config(tmp_path, colour="red")
    path.write_text(path.read_text().replace("timeout_s = 5", "timout_s = 5"))
    out = edge("--config", str(path), "status")
    assert out.returncode == EXIT_CONFIG
    line = one_line(out)
    text = path.read_text().splitlines()
    typo = text.index("timout_s = 5") + 1
    colour = text.index('colour = "red"') + 1
    assert f"{path}:{typo}: cloud.timout_s: unknown key; check its spelling" in line
    assert "timeout_s" in line.split("cloud.timout_s", 1)[1]  # the key it should be
    assert f"{path}:{colour}: sensors[0].colour: unknown key" in line
    assert "validation error" not in line and "type=" not in line and "pydantic" not in line
    assert "s3cr3t" not in out.stdout + out.stderr


def test_a_sensors_keys_are_those_of_its_source(tmp_path: Path) -> None:
    """Each source has its own keys: a misspelled key lists those of the sensor's source, and
    a key of another source is unknown (it would be ignored)."""
    path = config(tmp_path, source="serial", port="/dev/ttyUSB0", boudrate=9600, topic="t/x")
    out = edge("--config", str(path), "status")
    assert out.returncode == EXIT_CONFIG
    line = one_line(out)
    text = path.read_text().splitlines()
    typo, topic = text.index("boudrate = 9600") + 1, text.index('topic = "t/x"') + 1
    serial_keys = (
        "sensor_id, token, run_id, capture_session_id, source, port, baudrate, protocol,"
        " channel, max_line"
    )
    known = f'(known for source "serial": {serial_keys})'
    assert f"{path}:{typo}: sensors[0].boudrate: unknown key; check its spelling {known}" in line
    assert f"{path}:{topic}: sensors[0].topic: unknown key; check its spelling {known}" in line


def test_a_serial_sensor_without_its_port_names_the_key(tmp_path: Path) -> None:
    path = config(tmp_path, source="serial", protocol="modbus")
    out = edge("--config", str(path), "status")
    assert out.returncode == EXIT_CONFIG
    text = path.read_text().splitlines()
    table, protocol = text.index("[[sensors]]") + 1, text.index('protocol = "modbus"') + 1
    assert one_line(out).split("config error: ", 1)[1] == (
        f"{path}:{table}: sensors[0].port: required key missing; add it;"
        f" {path}:{protocol}: sensors[0].protocol: must be one of value, csv, jsonl,"
        " arduino-thermocouple, max31855-hex; correct it"
    )


def test_a_sensor_without_a_source_lists_the_sources(tmp_path: Path) -> None:
    path = config(tmp_path)
    path.write_text(path.read_text().replace('source = "mqtt"\n', ""))
    out = edge("--config", str(path), "status")
    assert out.returncode == EXIT_CONFIG
    table = path.read_text().splitlines().index("[[sensors]]") + 1
    sources = '(one of "mqtt", "serial")'
    assert one_line(out).endswith(
        f"{path}:{table}: sensors[0].source: required key missing; add it {sources}"
    )


def test_a_bad_value_names_its_line(tmp_path: Path) -> None:
    path = config(tmp_path, run_id="run-42")
    out = edge("--config", str(path), "run")
    assert out.returncode == EXIT_CONFIG
    n = path.read_text().splitlines().index('run_id = "run-42"') + 1
    line = one_line(out)
    assert f"{path}:{n}: sensors[0].run_id: Input should be a valid UUID" in line


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    path = config(tmp_path)
    out = edge("status", "--config", str(path), env={"BENCHLINK_EDGE_SYNC__BATCH_SIZE": "0"})
    assert out.returncode == EXIT_CONFIG
    line = one_line(out)
    assert "$BENCHLINK_EDGE_SYNC__BATCH_SIZE: sync.batch_size: Input should be greater" in line


def test_a_missing_config_file_says_how_to_give_one(tmp_path: Path) -> None:
    out = edge("--config", str(tmp_path / "nope.toml"), "status")
    assert out.returncode == EXIT_CONFIG
    assert "no such config file; give --config" in one_line(out)


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unknown_log_level_lists_the_levels(tmp_path: Path, where: str) -> None:
    opts = ["--config", str(config(tmp_path)), "--log-level", "verbose"]
    out = edge(*opts, "status") if where == "before" else edge("status", *opts)
    assert out.returncode == 2
    line = one_line(out)
    assert "--log-level" in line and "'verbose' is not a log level" in line
    assert "debug, info, warning, error, critical" in line


def test_a_bad_since_says_what_a_time_looks_like(tmp_path: Path) -> None:
    path = config(tmp_path)
    out = edge("replay", "--config", str(path), "--since", "yesterday", "--until", "2026-01-01")
    assert out.returncode == 2
    line = one_line(out)
    assert "--since" in line and "'yesterday' is not an ISO 8601 time" in line
    assert "2026-01-01T10:00:00Z" in line and "_when" not in line


def test_the_metrics_port_in_use_is_one_line_and_a_config_exit(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        path = config(tmp_path)
        path.write_text(path.read_text().replace("port = 0", f"port = {port}"))
        out = edge("run", "--config", str(path), timeout=30)
    assert out.returncode == EXIT_CONFIG  # RestartPreventExitStatus: no restart loop
    line = one_line(out)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line
    assert "[metrics] port" in line and str(path) in line


COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["bind", "{sid}", "--run-id", "{run}", "--capture-session-id", "{ses}"],
    ["flush"],
    ["dead-letter", "list"],
    ["dead-letter", "retry"],
    ["replay", "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-02T00:00:00Z"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_options_after_the_command_work_like_before_it(tmp_path: Path, command: list[str]) -> None:
    sid, run, ses = (str(uuid.uuid4()) for _ in range(3))
    path = config(tmp_path)
    buf = Buffer(tmp_path / "buffer.db")
    buf.upsert_sensor(sid, "t", "mqtt", run, ses)
    buf.close()
    cmd = [c.format(sid=sid, run=run, ses=ses) for c in command]
    opts = ["--config", str(path), "--log-level", "debug"]
    before = build_parser().parse_args([*opts, *cmd])
    after = build_parser().parse_args([*cmd, *opts])
    assert vars(before) == vars(after)
    assert (after.config, after.log_level) == (str(path), "debug")
    # for real: the default config (/etc/benchlink/edge.toml) is not there
    ran = edge(*cmd, *opts)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr


def test_run_with_its_options_after_the_command_as_a_unit_file_writes_it(tmp_path: Path) -> None:
    path = config(tmp_path)
    log = tmp_path / "edge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [EDGE, "run", "--config", str(path), "--log-level", "debug"], stderr=out, env=ENV
        )
    try:
        wait_for(lambda: "running with 1 sensor(s)" in log.read_text(), 20, "the daemon")
        assert " DEBUG " in log.read_text()  # --log-level after the command took effect
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("command", ["status", "run"])
def test_a_buffer_that_cannot_be_opened_is_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "a-file").write_text("")
    path = config(tmp_path)
    path.write_text(
        path.read_text().replace(str(tmp_path / "buffer.db"), str(tmp_path / "a-file" / "b.db"))
    )
    out = edge(command, "--config", str(path))
    assert out.returncode == EXIT_CONFIG
    line = one_line(out)
    assert f"buffer {tmp_path / 'a-file' / 'b.db'}: cannot open it" in line
    assert "[buffer] path" in line
