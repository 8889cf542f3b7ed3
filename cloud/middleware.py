"""ASGI middleware for the API: request bodies and Idempotency-Key.

Both are plain ASGI (not BaseHTTPMiddleware) so that they can read the body once, hand it
on, and capture the response without buffering anything else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response

from cloud.db.models import IdempotencyRecord
from cloud.db.outage import DATABASE_DOWN
from cloud.deps import refuse_repeated_identity
from cloud.errors import DomainError, FieldError, InvalidInput, PayloadTooLarge
from cloud.idempotency import SCOPE_KEY as IDEMPOTENCY_SCOPE_KEY
from cloud.idempotency import IdempotencyStore, PendingKey, Replay, check_key
from cloud.problems import database_unavailable, problem_for
from cloud.services.sensors import TokenGate, bearer_token, hash_token, token_refused
from cloud.settings import Settings
from common.wire import TELEMETRY_PATH

log = logging.getLogger("benchlink.cloud")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_KEY = "benchlink.body"
#: Set by routes whose answer carries a secret (a sensor token): names of top-level fields
#: that are kept out of the idempotency store, so tokens stay "hash only at rest".
SECRET_FIELDS_KEY = "benchlink.secret_fields"
WRITE_METHODS = {"POST", "PUT", "PATCH"}


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return str(v.decode("latin-1"))
    return None


async def _refuse(send: Send, exc: DomainError) -> None:
    """Answer before the app is reached, with the body its exception handler would give."""
    await _send_response(send, problem_for(exc))


async def _send_response(send: Send, response: Response) -> None:
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over the {limit}-byte limit")


class TelemetryAuthMiddleware:
    """Telemetry ingest's Bearer token, checked before its body is read: a sender without a
    sensor's token is answered 401 at once and its body is never read nor parsed."""

    def __init__(self, app: ASGIApp, gate: TokenGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ingest = scope["type"] == "http" and scope["path"] == TELEMETRY_PATH
        if ingest and scope["method"] == "POST":
            try:
                refuse_repeated_identity(HTTPConnection(scope))
            except DomainError as exc:
                await _send_response(send, problem_for(exc))
                return
            token = bearer_token(_header(scope, b"authorization"))
            try:
                admitted = token is not None and await self._admits(hash_token(token))
            except DATABASE_DOWN as exc:
                # Outside the app's exception handlers: without this, a database that went
                # away (restart, crash) made the token lookup a 500 and not a 503 to retry.
                reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                log.warning("database unavailable checking a sensor token: %s", reason)
                await _send_response(send, problem_for(database_unavailable()))
                return
            if not admitted:
                await _send_response(send, problem_for(token_refused(token)))
                return
        await self.app(scope, receive, send)

    async def _admits(self, token_hash: str) -> bool:
        # A sending sensor's token is remembered: its batches take no extra round trip.
        return self.gate.remembered(token_hash) or await run_in_threadpool(
            self.gate.lookup, token_hash
        )


# An escaped NUL in a JSON string: \u0000 preceded by an even number of backslashes.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _has_nul(body: bytes) -> bool:
    """PostgreSQL text and jsonb cannot hold NUL; refuse it up front on both databases, so
    the same request gets the same answer everywhere (and never a 500)."""
    return b"\x00" in body or (b"\\u0000" in body and _JSON_NUL.search(body) is not None)


def _as_json(scope: Scope) -> None:
    """A body sent without a type, or as a form (``curl -d``), said to be the JSON it is."""
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type in ("", "application/x-www-form-urlencoded"):
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
        headers.append((b"content-type", b"application/json"))
        # In place: the router records the matched route in this very scope, and the
        # timing middleware outside reads it from there.
        scope["headers"] = headers


class RequestBodyMiddleware:
    """Reads write requests' bodies under a size limit and treats them as JSON.

    ``curl -d`` without ``-H Content-Type`` sends ``application/x-www-form-urlencoded``; the
    API takes no forms, so such a body (and one with no type) is parsed as the JSON it is.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif b"%00" in scope.get("query_string", b"") or "\x00" in scope["path"]:
            await _refuse(
                send,
                InvalidInput(
                    "NUL characters are not accepted in the URL",
                    errors=[FieldError("query", "contains a NUL character")],
                ),
            )
        elif scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
        else:
            await self._write(scope, receive, send)

    async def _write(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A write request: its body read whole under the limit, then handed on as JSON."""
        path: str = scope["path"]
        limit = (
            self.settings.telemetry_max_body_bytes
            if path == TELEMETRY_PATH
            else self.settings.max_body_bytes
        )
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, _too_large(limit))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if path.startswith("/api/") and _has_nul(body):
            await _refuse(
                send,
                InvalidInput(
                    "NUL characters (\\u0000) are not accepted",
                    errors=[FieldError("body", "contains a NUL character")],
                ),
            )
            return
        if path.startswith("/api/"):
            _as_json(scope)
        scope[BODY_KEY] = body
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class IdempotencyMiddleware:
    """``Idempotency-Key`` on POST, after the IETF httpapi draft.

    The key is scoped to the principal the route authenticated (a user in a project, with
    the role): the route's authentication claims it (:func:`cloud.idempotency.claim`), so a
    stored answer is only ever replayed to a caller the route itself accepts. A repeat with
    the same body replays the stored response with ``Idempotent-Replayed: true``; with another
    body it is 422; while the first is still running it is 409. Records live in the database,
    so several API processes share them. A claim whose process died is taken over after the
    lease. Telemetry keeps its keys with its batches, scoped by sensor.
    """

    def __init__(
        self, app: ASGIApp, settings: Settings, store: IdempotencyStore, stats: Any
    ) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        # Telemetry keeps its keys in its own transaction (the batch table: one batch per key
        # and sensor, with its fingerprint; a concurrent retry waits on the unique key and is
        # answered as a replay), which is exactly-once even across crashes and costs the hot
        # path no extra transactions.
        if key is None or scope["method"] != "POST" or scope["path"] == TELEMETRY_PATH:
            await self.app(scope, receive, send)
            return
        try:
            check_key(key)
        except InvalidInput as exc:
            await _refuse(send, exc)
            return
        body: bytes = scope.get(BODY_KEY, b"")
        fingerprint = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + body
        ).hexdigest()
        pending = PendingKey(key, fingerprint)
        scope[IDEMPOTENCY_SCOPE_KEY] = pending
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Replay as replay:
            self.stats.replays.inc()
            await _replay(send, replay.record)
            return
        except BaseException:
            if pending.principal is not None:
                await self._quietly(self.store.release, pending.principal, key)
            raise
        if pending.principal is None:  # the route never authenticated anyone: nothing claimed
            return
        # Remember final answers; let a retry run again after a server error, a rate limit, a
        # conflict with the current state (which may change), or a refusal that depends on
        # the caller's credentials or role rather than on the request.
        if 200 <= status < 500 and status not in (401, 403, 409, 429):
            stored = _redact(b"".join(chunks), scope.get(SECRET_FIELDS_KEY, ()))
            await self._quietly(
                self.store.complete, pending.principal, key, status, headers, stored
            )
        else:
            await self._quietly(self.store.release, pending.principal, key)

    @staticmethod
    async def _quietly(fn: Callable[..., None], *args: Any) -> None:
        # The answer has gone out; if the store cannot be written now (database down), the
        # claim stays in flight until its lease ends and a retry then runs again.
        try:
            await run_in_threadpool(fn, *args)
        except Exception as exc:
            log.warning("idempotency record not updated: %s", str(exc).splitlines()[0])

    def purge_expired(self) -> int:
        return self.store.purge_expired()


def _redact(body: bytes, fields: tuple[str, ...]) -> bytes:
    """The stored copy of an answer without its secrets: a replay says the secret was shown
    once (rotate to get a new one) instead of keeping it in plain text for a day."""
    if not fields:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        for name in fields:
            if name in data:
                data[name] = None
                data[f"{name}_redacted"] = (
                    f"the {name} is shown only once, in the first answer; rotate it for a new one"
                )
    return json.dumps(data, separators=(",", ":")).encode()


async def _replay(send: Send, rec: IdempotencyRecord) -> None:
    body = rec.response_body or b""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rec.response_headers or []]
    headers += [
        (b"content-length", str(len(body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send(
        {"type": "http.response.start", "status": rec.status_code or 200, "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})


#: the status counted for a request whose client went away before it was answered
CLIENT_CLOSED_REQUEST = 499


class TimingMiddleware:
    """Counts requests by route template and status for Prometheus."""

    def __init__(self, app: ASGIApp, stats: Any) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = gone = False

        async def watch(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        async def listen() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        try:
            await self.app(scope, listen, watch)
        finally:
            if gone and not answered:
                # The client left before the answer (a request cut on a flaky network): no
                # server error, and counted as one it would set off 5xx alerts. nginx's 499.
                status = CLIENT_CLOSED_REQUEST
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.stats.requests.labels(scope["method"], name, str(status)).inc()
            self.stats.latency.labels(name).observe(time.perf_counter() - started)
