"""A TCP proxy that a test can cut: ``cut()`` drops every open connection and refuses new
ones until ``restore()``, as a network outage between a client and the cloud would.
``messages`` is set once a WebSocket's server has sent something after its handshake (its
first message), so that a test can cut a stream that is open but has carried nothing yet."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.support.services import free_port


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self.messages = threading.Event()
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client, True)

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool = False) -> None:
        sent: bytes | None = b"" if answers else None  # the server's bytes, while watched
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
                if sent is not None:
                    sent = self._watch(sent + data)
        for s in (source, sink):
            self._close(s)

    def _watch(self, sent: bytes) -> bytes | None:
        """What the server has sent so far; None once there is nothing more to watch for."""
        end = sent.find(b"\r\n\r\n")
        if end < 0:
            return sent
        if not sent.startswith(b"HTTP/1.1 101"):
            return None  # not a WebSocket
        if len(sent) > end + 4:
            self.messages.set()
            return None
        return sent

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()

    def cut(self) -> None:
        self._cut = True
        with self._lock:
            open_now = list(self._open)
        for s in open_now:
            self._close(s)

    def restore(self) -> None:
        self._cut = False

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[Proxy]:
    proxy = Proxy(port)
    try:
        yield proxy
    finally:
        proxy.close()
