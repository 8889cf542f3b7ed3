"""One daemon per buffer and one reader per serial port, with real processes on a real pty."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

from tests.edge.helpers import (
    BIN,
    EdgeProcess,
    running,
    stored_values,
    unbound_sensor,
    wait_for,
    write_config,
)
from tests.edge.test_serial import Pty


def serial_config(path: Path, buffer: Path, port: Path, sensor_id: str) -> Path:
    return write_config(
        path,
        cloud_url="http://127.0.0.1:9",  # nothing listens: the readings stay in the buffer
        buffer=buffer,
        sensors=[unbound_sensor(sensor_id, "serial", port=str(port), protocol="value")],
    )


def test_a_second_daemon_on_the_same_buffer_exits_at_once_with_one_line(
    tmp_path: Path,
) -> None:
    port = tmp_path / "ttyONE"
    dev = Pty(port)
    sid = str(uuid.uuid4())
    cfg = serial_config(tmp_path / "edge.toml", tmp_path / "buffer.db", port, sid)
    edge = EdgeProcess(cfg, tmp_path / "edge.log")
    try:
        with running(edge):
            wait_for(lambda: "open (value" in edge.log.read_text(), 20, "the port open")
            assert edge.proc is not None
            started = time.monotonic()
            second = subprocess.run(
                [str(BIN / "benchlink-edge"), "--config", str(cfg), "run"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            took = time.monotonic() - started
            assert second.returncode != 0
            assert second.stdout == ""
            lines = second.stderr.splitlines()
            assert len(lines) == 1, second.stderr
            assert f"pid {edge.proc.pid}" in lines[0]
            assert str(tmp_path / "buffer.db") in lines[0]
            assert took < 15, took  # at once: no retry loop, no wait for a timeout
            # The operator commands still run next to the daemon, reading and writing.
            dev.write(b"1.5\n2.5\n")
            wait_for(lambda: stored_values(tmp_path / "buffer.db") == [1.5, 2.5], 20, "2 readings")
            for args in (("status",), ("status", "--json"), ("dead-letter", "list")):
                done = edge.cli(*args)
                assert done.returncode == 0, (args, done.stderr)
            assert sid in edge.cli("status").stdout
            done = edge.cli("dead-letter", "retry")
            assert done.returncode == 0 and "0 batch(es) queued again" in done.stdout
            done = edge.cli("flush")  # the cloud is down: it gives up, but it runs
            assert "synced 0 batch(es)" in done.stdout, done.stderr
            assert "Traceback" not in done.stderr
            # the first daemon goes on reading
            dev.write(b"3.5\n")
            wait_for(
                lambda: stored_values(tmp_path / "buffer.db")[-1:] == [3.5], 20, "a 3rd reading"
            )
            assert edge.proc.poll() is None
        # killed -9 above (running() kills): the lock goes with the process
        edge.start()
        try:
            wait_for(lambda: edge.log.read_text().count("open (value") == 2, 20, "a restart")
        finally:
            edge.terminate()
    finally:
        dev.close()


def test_a_second_daemon_on_the_same_port_is_refused_the_port(tmp_path: Path) -> None:
    """Another buffer, the same port: the second daemon runs, but never reads the port."""
    port = tmp_path / "ttySHARED"
    dev = Pty(port)
    first = EdgeProcess(
        serial_config(tmp_path / "a.toml", tmp_path / "a.db", port, str(uuid.uuid4())),
        tmp_path / "a.log",
    )
    second = EdgeProcess(
        serial_config(tmp_path / "b.toml", tmp_path / "b.db", port, str(uuid.uuid4())),
        tmp_path / "b.log",
    )
    sent = [float(f"{i}1.2051") for i in range(1, 60)]
    try:
        with running(first):
            wait_for(lambda: "open (value" in first.log.read_text(), 20, "the first daemon")
            with running(second):
                wait_for(
                    lambda: (
                        len(re.findall("in use by another process", second.log.read_text())) >= 2
                    ),
                    20,
                    "the second daemon refused the port, twice",
                )
                for v in sent:
                    dev.write(f"{v}\n".encode())
                    time.sleep(0.003)
                wait_for(
                    lambda: len(stored_values(tmp_path / "a.db")) == len(sent), 20, "all lines"
                )
                time.sleep(0.5)
                assert "open (value" not in second.log.read_text()
    finally:
        dev.close()
    assert stored_values(tmp_path / "a.db") == sent  # every line whole, none split off
    assert stored_values(tmp_path / "b.db") == []
