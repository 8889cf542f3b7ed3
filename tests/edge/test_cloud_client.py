"""The edge's HTTP client on real sockets: TLS verified against the configured CA, a new
connection when a request asks for one, no answer as TransportError, proxies from the
environment looked up once."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from edge.cloud_client import CloudClient, TransportError, proxy_for
from edge.config import CloudConfig

HEADERS = {"Content-Type": "application/json", "Idempotency-Key": "k"}


@dataclass
class Server:
    """A one-endpoint HTTP/1.1 server: answers every request 202 with a JSON body, counts
    connections and keeps what it was sent."""

    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                close = any(x.lower() == "connection: close" for x in lines)
                body = b'{"accepted": 1, "late": 0}'
                writer.write(
                    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                    + (b"Connection: close\r\n" if close else b"")
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def serve(ssl_ctx: ssl.SSLContext | None = None) -> tuple[Server, asyncio.Server]:
    server = Server()
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=ssl_ctx)
    server.port = srv.sockets[0].getsockname()[1]
    return server, srv


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[Server]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    server, srv = await serve(ctx)
    yield server
    srv.close()
    await srv.wait_closed()


async def test_https_is_verified_against_the_configured_ca(
    tls_server: Server, ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    url = f"https://localhost:{tls_server.port}"
    async with CloudClient(CloudConfig(url=url, ca_bundle=bundle)) as client:
        answer = await client.post("/api/v1/telemetry", b"{}", {**HEADERS, "Authorization": "B t"})
    assert answer.status == 202 and answer.json() == {"accepted": 1, "late": 0}
    assert b"\r\nAuthorization: B t\r\n" in tls_server.requests[0]
    # the system's CAs do not know this one: no answer, and the loop will retry
    async with CloudClient(CloudConfig(url=url)) as client:
        with pytest.raises(TransportError, match=r"(?i)certificate"):
            await client.post("/api/v1/telemetry", b"{}", HEADERS)
    # nor does a certificate for "localhost" pass for another name
    other = f"https://127.0.0.1:{tls_server.port}"
    async with CloudClient(CloudConfig(url=other, ca_bundle=bundle)) as client:
        with pytest.raises(TransportError):
            await client.post("/api/v1/telemetry", b"{}", HEADERS)
    assert len(tls_server.requests) == 1


async def test_connections_are_kept_unless_a_request_asks_to_close() -> None:
    server, srv = await serve()
    try:
        async with CloudClient(CloudConfig(url=f"http://127.0.0.1:{server.port}")) as client:
            for _ in range(3):
                assert (await client.post("/x", b"{}", HEADERS)).status == 202
            assert server.connections == 1
            await client.post("/x", b"{}", {**HEADERS, "Connection": "close"})
            await client.post("/x", b"{}", HEADERS)
            assert server.connections == 2  # the sync loop's way to move to another worker
    finally:
        srv.close()
        await srv.wait_closed()


async def test_no_answer_is_a_transport_error() -> None:
    server, srv = await serve()
    srv.close()
    await srv.wait_closed()
    async with CloudClient(CloudConfig(url=f"http://127.0.0.1:{server.port}")) as client:
        with pytest.raises(TransportError):
            await client.post("/x", b"{}", HEADERS)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(5)
        writer.close()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        config = CloudConfig(url=f"http://127.0.0.1:{port}", timeout_s=0.2)
        async with CloudClient(config) as client:
            with pytest.raises(TransportError, match="Timeout"):
                await client.post("/x", b"{}", HEADERS)
    finally:
        srv.close()
        await srv.wait_closed()


def test_the_proxy_comes_from_the_environment_unless_no_proxy_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    assert proxy_for("https://cloud.example") is None
    monkeypatch.setenv("https_proxy", "http://proxy.lab:3128")
    monkeypatch.setenv("no_proxy", "localhost,.internal")
    assert proxy_for("https://cloud.example/api") == "http://proxy.lab:3128"
    assert proxy_for("http://cloud.example") is None  # no http_proxy
    assert proxy_for("https://localhost:8002") is None
    assert proxy_for("https://bench.internal") is None
    assert CloudClient(CloudConfig(url="https://cloud.example")).proxy == "http://proxy.lab:3128"
    monkeypatch.setenv("all_proxy", "gate.lab:8080")  # no scheme: http://, as curl reads it
    assert proxy_for("http://cloud.example") == "http://gate.lab:8080"
