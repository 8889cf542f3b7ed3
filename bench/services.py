"""Services the benchmarks (and the integration tests, through ``tests/support``) start the
same way: free ports, waiting for a port, a private Mosquitto with the project's limits.

A service that cannot be started raises :class:`ServiceUnavailable`; the tests turn it into
a skip (or a failure in CI), a benchmark stops with it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ServiceUnavailable(RuntimeError):
    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} unavailable: {reason}")
        self.what, self.reason = what, reason


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


@dataclass
class Broker:
    host: str
    port: int
    topic_prefix: str

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def mosquitto_binary() -> str:
    """The ``mosquitto`` executable (ServiceUnavailable if it is not installed)."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        raise ServiceUnavailable("Mosquitto", "the mosquitto binary is not installed")
    return binary


@contextlib.contextmanager
def private_mosquitto(config: Path | None = None) -> Iterator[Broker]:
    """Start ``mosquitto`` on a free port with the project's limits; stop it afterwards.

    The machine's shared broker keeps Debian's ``max_queued_messages 1000``, which drops QoS 1
    messages for a slow subscriber, so tests that push many messages use their own.
    """
    binary = mosquitto_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="benchlink-mosq-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {tmp}/",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",  # as mosquitto/mosquitto.conf: bounded edge memory
            "log_dest stderr",
            "log_type error",
        ]
        if config is not None:
            lines.append(f"# based on {config}")
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE)
        try:
            if not wait_port("127.0.0.1", port):
                proc.kill()
                said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise ServiceUnavailable("Mosquitto", f"did not start: {said}")
            yield Broker("127.0.0.1", port, f"benchlink-test/{uuid.uuid4().hex[:10]}")
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
