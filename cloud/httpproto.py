"""uvicorn's HTTP/1.1 protocol (httptools) with limits on the request head.

httptools keeps a request's headers in memory until the head ends, however long it is: one
client could hold megabytes per connection. Here the head is measured before the parser sees
it: more than ``max_header_bytes`` or ``max_headers`` lines is answered 431 and the
connection closed; a head that has not arrived within ``header_timeout_s`` of its first byte
(or of the connection) closes the connection, and so does a request body that stalls for
``body_timeout_s``. ``benchlink-cloud serve`` runs uvicorn with ``http=`` this class.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cloud.problems import problem_response
from cloud.settings import Settings

#: For ``uvicorn.run(http=...)`` (an import string, so that every worker process finds it).
IMPORT_PATH = "cloud.httpproto:LimitedHttpProtocol"

_HEAD_END = b"\r\n\r\n"


@lru_cache(maxsize=1)
def _limits() -> tuple[int, int, float, float]:
    s = Settings()
    return s.max_header_bytes, s.max_headers, s.header_timeout_s, s.body_timeout_s


def _refusal(status: int, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response (problem+json) that closes the connection."""
    response = problem_response(status, title, detail)
    head = [f"HTTP/1.1 {status} {title}".encode()]
    head += [k + b": " + v for k, v in response.raw_headers]
    head.append(b"connection: close")
    return b"\r\n".join(head) + _HEAD_END + response.body


class LimitedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.max_headers, self.header_timeout_s, self.body_timeout_s = (
            _limits()
        )
        self._in_head = True  # reading a request's head (from the connection, or after a body)
        self._head_bytes = 0
        self._head_lines = 0
        self._tail = b""  # the last bytes of the head so far, to find an end split across reads
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._body_read_at = 0.0  # when the body last made progress (loop time)
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head and not self._head_fits(data):
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        if not self.parser.should_upgrade():  # a WebSocket's connection is not ours any more
            self._body_read_at = self.loop.time()
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_stalled)

    def on_body(self, body: bytes) -> None:
        self._body_read_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()
        self._in_head, self._head_bytes, self._head_lines, self._tail = True, 0, 0, b""

    # --- limits ----------------------------------------------------------------------------

    def _head_fits(self, data: bytes) -> bool:
        """Count ``data``'s part of the head; refuse the request if the head is too large."""
        seen = self._tail + data
        end = seen.find(_HEAD_END)
        part = data if end < 0 else data[: max(0, end + len(_HEAD_END) - len(self._tail))]
        self._head_bytes += len(part)
        self._head_lines += part.count(b"\n")
        self._tail = seen[-(len(_HEAD_END) - 1) :]
        if self._head_bytes > self.max_header_bytes:
            self._refuse(f"request headers over the {self.max_header_bytes}-byte limit")
            return False
        if self._head_lines > self.max_headers + 2:  # the request line and the empty line
            self._refuse(f"more than {self.max_headers} request headers")
            return False
        return True

    def _refuse(self, detail: str) -> None:
        self._refused = True
        self._cancel_head_timer()
        self.logger.warning("refused a request: %s", detail)
        if not self.transport.is_closing():
            self.transport.write(_refusal(431, "Request Header Fields Too Large", detail))
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_stalled(self) -> None:
        # One timer per request, pushed back by each read instead of re-armed per chunk; not
        # counted while uvicorn itself stopped reading because the app has not taken the body.
        self._body_timer = None
        if self.transport.is_closing():
            return
        due = self._body_read_at + self.body_timeout_s
        if self.flow.read_paused or due > self.loop.time():
            wait = self.body_timeout_s if self.flow.read_paused else due - self.loop.time()
            self._body_timer = self.loop.call_later(wait, self._body_stalled)
            return
        self.logger.info("closed a connection: request body stalled for %g s", self.body_timeout_s)
        self._refused = True
        self.transport.close()

    def _head_timed_out(self) -> None:
        # Armed from the connection and from each request's first byte, cancelled when the head
        # ends: an idle kept-alive connection is uvicorn's (timeout_keep_alive), a request
        # being answered the app's.
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        self._refused = True
        if self._head_bytes:
            detail = f"request headers not received within {self.header_timeout_s:g} s"
            self.logger.info("closed a connection: %s", detail)
            self.transport.write(_refusal(408, "Request Timeout", detail))
        self.transport.close()
