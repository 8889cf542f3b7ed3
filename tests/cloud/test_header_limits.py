"""Request heads are limited in size, count and time, on a real ``benchlink-cloud serve``."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from bench.harness import PeakRss
from cloud.migrate import upgrade
from tests.support.cloud import CloudServer


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudServer]:
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    upgrade(url)
    server = CloudServer(
        url,
        env={"BENCHLINK_HEADER_TIMEOUT_S": "2", "BENCHLINK_BODY_TIMEOUT_S": "2"},
        log_path=tmp_path / "cloud.log",
    )
    with server:
        yield server


def _send_head(port: int, head: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send ``head`` in chunks and return what the server answered ('' if it just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for i in range(0, len(head), chunk):
                s.sendall(head[i : i + chunk])
        except OSError:
            pass  # refused and closed while the head was still going out
        try:
            return s.recv(65536)
        except OSError:
            return b""


def _get(extra: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def test_a_one_megabyte_header_is_431_and_memory_stays_flat(cloud: CloudServer) -> None:
    assert cloud.proc is not None
    rss = PeakRss(cloud.proc.pid)
    rss.reset()
    before = rss.mb
    for _ in range(6):  # the issue: six such connections held +400 MB
        answer = _send_head(cloud.port, _get(b"X-Big: " + b"a" * (16 * 1024 * 1024) + b"\r\n"))
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    answer = _send_head(cloud.port, _get(b"X-Big: " + b"a" * 1024 * 1024 + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in answer
    growth = rss.mb - before
    assert growth < 20, f"the API grew by {growth:.0f} MB"
    assert httpx.get(cloud.url + "/healthz", timeout=5).status_code == 200


def test_too_many_headers_are_431_and_ordinary_ones_pass(cloud: CloudServer) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
    assert _send_head(cloud.port, _get(many)).startswith(b"HTTP/1.1 431 ")
    # A generous but ordinary head: 50 headers, 8 KB of cookie.
    headers = {f"X-H{i}": "v" for i in range(50)} | {"Cookie": "c=" + "x" * 8000}
    assert httpx.get(cloud.url + "/healthz", headers=headers, timeout=5).status_code == 200


def test_a_head_sent_too_slowly_is_cut_off(cloud: CloudServer) -> None:
    """A header line every half second (slowloris) keeps no connection beyond the timeout."""
    answer = b""
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=0.5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 15:
            try:
                s.sendall(b"X-Slow: 1\r\n")
                chunk = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert elapsed < 8, elapsed


def test_a_stalled_body_closes_the_connection(cloud: CloudServer) -> None:
    head = (
        b"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-Id: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" % uuid4().hex.encode()
    )
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as s:
        s.sendall(head + b'{"name": ')  # and nothing more
        started = time.monotonic()
        try:
            answer = s.recv(4096)
        except TimeoutError:
            answer = b"(still open)"
        except OSError:
            answer = b""
        elapsed = time.monotonic() - started
    assert answer == b"", answer[:200]
    assert elapsed < 6, elapsed
    assert httpx.get(cloud.url + "/healthz", timeout=5).status_code == 200
