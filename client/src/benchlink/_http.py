"""HTTP with the caller's identity, retries, and an Idempotency-Key on every POST.

A POST keeps one key across all of its own retries: when an answer is lost after the server
acted (a reset connection, a timeout), the retry is answered from the server's record of that
key instead of acting a second time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from benchlink._config import Config
from benchlink._exceptions import ConfigError, TransportError, error_for

log = logging.getLogger("benchlink.client")

#: Answers worth retrying: the server (or a proxy in front of it) asks to come back later.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Retry:
    """How often and how long to retry: ``attempts`` tries in all, waiting a random time
    between half and all of ``backoff * 2**n`` seconds (at most ``cap``) before try n+1, or
    what the server's ``Retry-After`` says (also at most ``cap``). Random, so that many
    clients cut off together do not come back together."""

    attempts: int = 6
    backoff: float = 0.5
    cap: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        ceiling = min(self.cap, self.backoff * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None  # an HTTP date: rare from this server; back off as usual


def _retryable(response: httpx.Response) -> bool:
    # 409 with Retry-After: the same Idempotency-Key is still being processed (our own earlier
    # try, whose answer was lost); other 409s are final (e.g. an archived experiment).
    if response.status_code == 409:
        return "retry-after" in response.headers
    return response.status_code in RETRY_STATUSES


class Http:
    """One connection pool to the cloud, with the identity headers set once."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.retry = retry or Retry()
        headers = {"User-Agent": "benchlink-client/0.1"}
        if config.gateway_secret:
            headers["X-Gateway-Secret"] = config.gateway_secret
        self._client = httpx.Client(
            base_url=config.url, headers=headers, timeout=timeout, transport=transport
        )
        self._identity: dict[str, str] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def identity(self) -> dict[str, str]:
        """The identity headers; a project given by name is looked up once, on first use (so a
        client made while the server is down can still queue metrics)."""
        with self._lock:
            if self._identity is None:
                self._identity = self._resolve_identity()
            return self._identity

    def _resolve_identity(self) -> dict[str, str]:
        cfg = self.config
        if not cfg.user:
            raise ConfigError("no user: pass Client(user=...) or set BENCHLINK_USER")
        headers = {"X-User-Id": cfg.user, "X-Project-Role": cfg.role}
        if not cfg.project:
            return headers
        try:
            headers["X-Project-Id"] = str(uuid.UUID(cfg.project))
        except ValueError:
            headers["X-Project-Id"] = self._project_by_name(cfg.user, cfg.project)
        return headers

    def _project_by_name(self, user: str, name: str) -> str:
        found = self._send(
            "GET", "/api/v1/projects", params={"name": name}, headers={"X-User-Id": user}
        ).json()["items"]
        if not found:
            raise ConfigError(f"user {user} has no project named {name!r}")
        return str(found[0]["id"])

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: Retry | None = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty one); errors raise :class:`APIError`.
        ``retry``: another policy than the client's for this request."""
        headers = dict(self.identity())
        if method == "POST":
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        response = self._send(method, path, json=json, params=params, headers=headers, retry=retry)
        return response.json() if response.content else None

    def get_sized(self, path: str, *, params: Mapping[str, Any] | None = None) -> tuple[Any, int]:
        """A GET's decoded JSON and the size of its body in bytes (for progress)."""
        response = self._send("GET", path, params=params, headers=dict(self.identity()))
        return response.json(), len(response.content)

    @contextmanager
    def stream(
        self, path: str, *, params: Mapping[str, Any] | None = None
    ) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives (``response.iter_bytes()``), for exports of
        any size. Retried as :meth:`request` is until the answer starts; an error answer
        raises :class:`APIError`. Closed (the connection back in the pool) on the way out."""
        headers = dict(self.identity())
        response = self._send("GET", path, params=params, headers=headers, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: dict[str, str],
        retry: Retry | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        policy = retry or self.retry
        clean = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            try:
                request = self._client.build_request(
                    method, path, json=json, params=clean, headers=headers
                )
                response = self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if last:
                    raise TransportError(
                        f"{method} {self.config.url}{path}: {exc!r} (after {policy.attempts} tries)"
                    ) from exc
                self._wait(policy, attempt, None, f"{type(exc).__name__}")
                continue
            if response.is_success:
                return response
            if stream:  # an error answer is small: read it for its problem, then let go
                response.read()
                response.close()
            if _retryable(response) and not last:
                self._wait(policy, attempt, _retry_after(response), str(response.status_code))
                continue
            raise _error(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, policy: Retry, attempt: int, retry_after: float | None, why: str) -> None:
        pause = policy.delay(attempt, retry_after)
        log.info("retrying in %.2f s (%s, try %d)", pause, why, attempt + 2)
        time.sleep(pause)


def _param(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value) if isinstance(value, uuid.UUID) else value


def _error(response: httpx.Response) -> Exception:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return error_for(response.status_code, body, response.reason_phrase)
