"""One daemon per buffer: a lock file beside the buffer, held for the daemon's life.

Two daemons on one buffer would seal and send the same readings from two processes, and
read the same serial ports and MQTT session twice. The lock is ``flock`` on
``<buffer>.lock``: the kernel releases it when the process ends however it ends (kill -9
included), so a stale file never blocks a restart. The operator commands (``status``,
``flush``, ``dead-letter``, ``replay``, ``bind``) do not take it: they are made to run next to
a daemon (SQLite WAL, idempotent batch ids).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class Refused(RuntimeError):
    """The daemon must not run (another one holds what it needs); the message says which
    and what to do, in one line."""


class AlreadyRunning(Refused):
    pass


class BufferLock:
    def __init__(self, buffer: Path) -> None:
        self.buffer = buffer
        self.path = buffer.with_name(buffer.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> BufferLock:
        """Take the lock or raise :class:`AlreadyRunning` naming the holder's PID."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise AlreadyRunning(
                f"another benchlink-edge daemon{who} is running on the buffer {self.buffer}"
                f" (lock {self.path}): stop it, or give this daemon its own [buffer] path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: deleting it would let a third process lock a new file while a
        # second one still waits on the old one.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pid_in(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None
