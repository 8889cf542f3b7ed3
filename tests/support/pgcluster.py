"""A private PostgreSQL cluster (initdb + postgres on a free port, in a temporary directory)
that a test may kill -9 and start again -- never the machine's shared server.

PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.services import free_port, unavailable, wait_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@dataclass
class PrivateCluster:
    datadir: Path
    port: int = field(default_factory=free_port)
    user: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 60.0) -> None:
        postgres = _binary("postgres")
        assert postgres is not None
        log = (self.datadir.parent / "postgres.log").open("ab")
        deadline = time.monotonic() + timeout
        while True:  # after a kill -9, its old backends may hold the shared memory a moment
            self.proc = subprocess.Popen(
                [
                    postgres,
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-k",
                    "",
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=on",
                ],
                stdout=log,
                stderr=log,
                user=self.user,
                start_new_session=True,
            )
            if wait_port("127.0.0.1", self.port, timeout=15) and self._accepts():
                log.close()
                return
            self.proc.kill()
            self.proc.wait()
            if time.monotonic() > deadline:
                log.close()
                raise RuntimeError("the private PostgreSQL did not start")
            time.sleep(0.5)

    def _accepts(self) -> bool:
        import psycopg

        for _ in range(100):
            try:
                psycopg.connect(self.url.replace("+psycopg", ""), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:  # still in crash recovery
                time.sleep(0.1)
        return False

    def kill9(self) -> None:
        """The whole cluster dies at once (postmaster and backends): an OOM kill, a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.proc = None


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    initdb = _binary("initdb")
    if initdb is None or _binary("postgres") is None:
        unavailable("PostgreSQL binaries", "initdb/postgres not installed")
        raise AssertionError("unreachable")
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            unavailable("PostgreSQL binaries", "running as root and no postgres user to run as")
    with tempfile.TemporaryDirectory(prefix="benchlink-pg-") as tmp:
        datadir = Path(tmp) / "data"
        if user is not None:
            shutil.chown(tmp, user)
        subprocess.run(
            [initdb, "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            user=user,
        )
        cluster = PrivateCluster(datadir, user=user)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
