"""Real services for integration tests: a throw-away PostgreSQL database, a private Mosquitto.

On a developer's laptop a missing service makes its tests skip with the reason; in CI
(``BENCHLINK_REQUIRE_SERVICES=1``) it is a failure, so a green run never hides one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.services import Broker, ServiceUnavailable, free_port, wait_port
from bench.services import private_mosquitto as bench_mosquitto

PG_ADMIN_DSN = os.environ.get("BENCHLINK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[2]


def services_required() -> bool:
    return os.environ.get("BENCHLINK_REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def unavailable(what: str, reason: str) -> None:
    """Skip (laptop) or fail (CI) because ``what`` cannot be reached."""
    message = f"{what} unavailable: {reason}"
    if services_required():
        pytest.fail(message + " (BENCHLINK_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def postgres_database(options: str = "") -> Iterator[str]:
    """Create ``benchlink_test_<random>`` (``CREATE DATABASE`` ``options``: a locale, say),
    yield its SQLAlchemy URL, drop it afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # the driver raises several kinds; all mean "not here"
        unavailable("PostgreSQL", f"{PG_ADMIN_DSN}: {exc}")
        raise  # unreachable: unavailable() skips or fails
    name = f"benchlink_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}" {options}')
        base = PG_ADMIN_DSN.rsplit("/", 1)[0]
        try:
            yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def private_mosquitto(config: Path | None = None) -> Iterator[Broker]:
    """:func:`bench.services.private_mosquitto`, skipped (laptop) or failed (CI) when it
    cannot start."""
    with contextlib.ExitStack() as stack:
        try:
            broker = stack.enter_context(bench_mosquitto(config))
        except ServiceUnavailable as exc:
            unavailable(exc.what, exc.reason)
            raise
        yield broker


def shared_mosquitto() -> Broker:
    """The machine's broker on 1883, with a unique topic prefix for this test."""
    if not wait_port("127.0.0.1", 1883, timeout=2):
        unavailable("Mosquitto", "nothing listens on 127.0.0.1:1883")
    return Broker("127.0.0.1", 1883, f"benchlink-test/{uuid.uuid4().hex[:10]}")


class RestartableMosquitto:
    """A private Mosquitto with persistence that a test stops and starts again on the same port
    and the same persistence directory: :meth:`restart` (SIGTERM: Mosquitto saves its state on
    the way out), :meth:`kill9` then :meth:`start` (it comes back with the state of its last
    save), :meth:`save` (SIGUSR1: write the state now, as an autosave would)."""

    def __init__(self, directory: Path, autosave_interval: int = 3600) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            unavailable("Mosquitto", "the mosquitto binary is not installed")
            raise AssertionError("unreachable")
        self.binary, self.dir, self.port = binary, directory, free_port()
        self.db = directory / "mosquitto.db"
        self.conf = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/",
            # a long interval by default: the test decides when the state is saved
            f"autosave_interval {autosave_interval}",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",  # as mosquitto/mosquitto.conf
            "log_dest stderr",
            "log_type error",
        ]
        if os.geteuid() == 0:
            # run as root, Mosquitto switches to the user "mosquitto", which may not write
            # here (a test's directory): it would run without ever saving its state
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.broker = Broker("127.0.0.1", self.port, f"benchlink-test/{uuid.uuid4().hex[:10]}")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stderr=log)
        if not wait_port("127.0.0.1", self.port, 20):
            self.proc.kill()
            self.proc.wait()
            unavailable("Mosquitto", f"did not start: {self.log.read_text()[-2000:]}")

    def _saved_at(self) -> int:
        return self.db.stat().st_mtime_ns if self.db.exists() else 0

    def save(self) -> None:
        """Write the persistence file now; return once it is on disk."""
        assert self.proc is not None
        before = self._saved_at()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while self._saved_at() == before:
            assert time.monotonic() < deadline, "Mosquitto did not save its state"
            time.sleep(0.01)

    def restart(self) -> None:
        """A graceful restart: SIGTERM (the state is saved), then start again."""
        self.stop()
        self.start()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def restartable_mosquitto(
    directory: Path, autosave_interval: int = 3600
) -> Iterator[RestartableMosquitto]:
    broker = RestartableMosquitto(directory, autosave_interval)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
