"""A fault-injecting TCP proxy (asyncio, in a thread) between a client and a real server.

Each accepted connection gets the proxy's current :class:`Fault` (``proxy.fault = ...``, or a
``chooser`` called per connection with the proxy's seeded ``random.Random``):

- ``pass``: bytes go through untouched;
- ``delay``: every chunk waits ``delay_s`` first, both ways;
- ``drop_request``: the connection is cut after a random part of the client's first bytes
  (the server sees a truncated request, the client no answer);
- ``lose_response``: the request goes through whole; when the server's answer starts coming
  back the client's side is reset (RST) -- the server did the work, the client never knows;
- ``blackhole``: bytes are swallowed in both directions, nothing is ever answered; also
  ``proxy.blackhole_all = True`` swallows the traffic of connections already open;
- ``bandwidth``: both directions trickle at ``bytes_per_s``.

``injected`` counts the connections each fault kind was applied to (``pass`` is not counted),
and ``reset`` the open connections :meth:`FaultProxy.reset_all` cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("pass", "delay", "drop_request", "lose_response", "blackhole", "bandwidth")


@dataclass(frozen=True)
class Fault:
    kind: str = "pass"
    delay_s: float = 0.5
    bytes_per_s: int = 20_000

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(KINDS)}")


PASS = Fault()


class FaultProxy:
    """``FaultProxy(upstream_port, seed=...)``; ``start()`` / ``stop()`` or a ``with`` block."""

    def __init__(self, upstream_port: int, *, seed: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.rng = random.Random(seed)
        self.fault: Fault = PASS
        self.chooser: Callable[[random.Random], Fault] | None = None
        self.blackhole_all = False
        self.injected: Counter[str] = Counter()
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def reset_all(self) -> int:
        """Reset every open connection (counted as ``reset``), so the next requests take the
        current fault: a client's kept-alive connection would go on with its old one."""
        loop = self._loop
        assert loop is not None

        def cut() -> int:
            writers = list(self._open)
            for w in writers:
                _reset(w)
            return len(writers)

        n = asyncio.run_coroutine_threadsafe(_call(cut), loop).result(10)
        with self._lock:
            self.injected["reset"] += n
        return n

    # -- one connection --------------------------------------------------------------------

    def _choose(self) -> Fault:
        with self._lock:
            self.connections += 1
            fault = self.chooser(self.rng) if self.chooser else self.fault
            if fault.kind != "pass":
                self.injected[fault.kind] += 1
            return fault

    def _cut_at(self) -> int:
        with self._lock:
            return self.rng.randrange(1, 400)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        fault = self._choose()
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(client_w)  # the server is down: refused, as without the proxy
            return
        self._open.add(client_w)
        tasks = [
            asyncio.create_task(self._pump(client_r, server_w, fault, upstream=True)),
            asyncio.create_task(
                self._pump(server_r, client_w, fault, upstream=False, reset=client_w)
            ),
        ]
        try:
            # One side failing (a cut, a reset) ends the connection: the other is cancelled.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            self._open.discard(client_w)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (server_w, client_w):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: Fault,
        *,
        upstream: bool,
        reset: asyncio.StreamWriter | None = None,
    ) -> None:
        budget = self._cut_at() if fault.kind == "drop_request" and upstream else None
        swallowing = fault.kind == "blackhole"
        while True:
            data = await reader.read(4096 if fault.kind != "bandwidth" else 512)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            if swallowing or self.blackhole_all:
                swallowing = True  # a stream that lost bytes can never be trusted again
                continue
            if budget is not None:
                if len(data) >= budget:
                    writer.write(data[:budget])
                    with contextlib.suppress(OSError):
                        await writer.drain()
                    raise ConnectionResetError("drop_request: cut mid-request")
                budget -= len(data)
            if fault.kind == "lose_response" and reset is not None:
                _reset(reset)  # the server answered: the client never hears it
                raise ConnectionResetError("lose_response")
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay_s)
            elif fault.kind == "bandwidth":
                await asyncio.sleep(len(data) / fault.bytes_per_s)
            writer.write(data)
            await writer.drain()


async def _call(fn: Callable[[], int]) -> int:
    return fn()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
