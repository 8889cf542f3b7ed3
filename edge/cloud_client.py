"""The edge's HTTP client for the cloud: POSTs over kept-alive connections, answers as data.

aiohttp, not httpx: while draining a backlog, httpx was a third of the CPU the edge spent per
batch of 1000 readings. Against a local server, httpx took 2.7 ms of CPU per request (1.5 ms
with sniffio installed), this client 0.4 ms; a drain of a million readings
(``bench/run.py --only sync_drain``) went from 9.2 to 7.3 s of edge CPU. On a bench PC with
a core to spare that is noise; on a small box, or one that shares its CPU, it is the rate.

The sync loop sees only :class:`Answer` and :class:`TransportError`, so a test can stand a
scripted cloud in for the network (``tests.edge.helpers.MockCloudClient``).
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import aiohttp

from edge.config import CloudConfig


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole. ``headers`` has lower-case names."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON (or not UTF-8)."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class TransportError(Exception):
    """No answer: the connection was refused or lost, the request timed out, or the answer
    could not be read. Always worth another try."""


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, or None. Looked up once: aiohttp's own
    ``trust_env`` reads the environment and ~/.netrc again for every request, which was 1.1
    of the 1.5 ms of CPU a request cost."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"  # "proxy.lab:3128", as curl takes it (aiohttp would not)
    return proxy


class Poster(Protocol):
    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> Answer: ...


@runtime_checkable
class Requester(Protocol):
    async def request(
        self, method: str, path: str, content: bytes | None, headers: Mapping[str, str]
    ) -> Answer: ...


class CloudClient:
    """POST to the cloud at ``[cloud] url``: certificates verified (against ``ca_bundle``
    when set), ``timeout_s`` for a whole request, through the proxy that ``https_proxy`` /
    ``http_proxy`` name unless ``no_proxy`` exempts the cloud's host (as curl does).
    An async context manager; the session opens on first use (inside the running loop)."""

    def __init__(self, cloud: CloudConfig) -> None:
        self.base = cloud.url.rstrip("/")
        self._cloud = cloud
        self._session: aiohttp.ClientSession | None = None
        self.proxy = proxy_for(self.base)

    def _open(self) -> aiohttp.ClientSession:
        verify: ssl.SSLContext | bool = True
        if self._cloud.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(self._cloud.ca_bundle))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=verify),
            timeout=aiohttp.ClientTimeout(total=self._cloud.timeout_s),
            headers={"User-Agent": "benchlink-edge"},
        )
        return self._session

    async def post(self, path: str, content: bytes, headers: Mapping[str, str]) -> Answer:
        return await self.request("POST", path, content, headers)

    async def request(
        self, method: str, path: str, content: bytes | None, headers: Mapping[str, str]
    ) -> Answer:
        session = self._session or self._open()
        try:
            async with session.request(
                method, self.base + path, data=content, headers=headers, proxy=self.proxy
            ) as r:
                body = await r.read()
                return Answer(
                    r.status, body, {k.lower(): v for k, v in r.headers.items()}, r.reason or ""
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}"[:500]) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> CloudClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
