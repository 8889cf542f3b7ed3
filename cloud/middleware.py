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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import Response

from cloud.db.models import IdempotencyRecord, Sensor
from cloud.deps import identify
from cloud.errors import DomainError, FieldError
from cloud.problems import problem_for, problem_response
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


async def _send_problem(send: Send, status: int, title: str, detail: str, **kw: Any) -> None:
    await _send_response(send, problem_response(status, title, detail, **kw))


async def _send_response(send: Send, response: Response) -> None:
    start = {"type": "http.response.start", "status": response.status_code}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class TelemetryAuthMiddleware:
    """Telemetry ingest's Bearer token, checked before its body is read: a sender without a
    sensor's token is answered 401 at once and its body is never read nor parsed."""

    def __init__(self, app: ASGIApp, gate: TokenGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ingest = scope["type"] == "http" and scope["path"] == TELEMETRY_PATH
        if ingest and scope["method"] == "POST":
            token = bearer_token(_header(scope, b"authorization"))
            if token is None or not await self._admits(hash_token(token)):
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
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope["path"]:
            await _send_problem(
                send,
                422,
                "Invalid input",
                "NUL characters are not accepted in the URL",
                slug="invalid-input",
                errors=[FieldError("query", "contains a NUL character")],
            )
            return
        if scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = (
            self.settings.telemetry_max_body_bytes
            if path == TELEMETRY_PATH
            else self.settings.max_body_bytes
        )
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_problem(
                send,
                413,
                "Payload too large",
                f"request body over the {limit}-byte limit",
                slug="payload-too-large",
            )
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_problem(
                    send,
                    413,
                    "Payload too large",
                    f"request body over the {limit}-byte limit",
                    slug="payload-too-large",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if path.startswith("/api/") and _has_nul(body):
            await _send_problem(
                send,
                422,
                "Invalid input",
                "NUL characters (\\u0000) are not accepted",
                slug="invalid-input",
                errors=[FieldError("body", "contains a NUL character")],
            )
            return
        content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if path.startswith("/api/") and content_type in ("", "application/x-www-form-urlencoded"):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            # In place: the router records the matched route in this very scope, and the
            # timing middleware outside reads it from there.
            scope["headers"] = headers
        scope[BODY_KEY] = body
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@dataclass
class _Claim:
    outcome: str  # proceed | replay | mismatch | in_flight | unknown_token
    record: IdempotencyRecord | None = None


class IdempotencyMiddleware:
    """``Idempotency-Key`` on POST, after the IETF httpapi draft.

    The key is scoped to the principal (a user in a project, or a sensor token). A repeat with
    the same body replays the stored response with ``Idempotent-Replayed: true``; with another
    body it is 422; while the first is still running it is 409. Records live in the database,
    so several API processes share them. A claim whose process died is taken over after the
    lease; telemetry additionally records the key in its own transaction, so even then a batch
    is never stored twice.
    """

    def __init__(
        self, app: ASGIApp, settings: Settings, sessions: sessionmaker[Session], stats: Any
    ) -> None:
        self.app = app
        self.settings = settings
        self.sessions = sessions
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
        if not 1 <= len(key) <= 255:
            await _send_problem(
                send,
                422,
                "Invalid input",
                "Idempotency-Key must be 1 to 255 characters",
                slug="invalid-input",
                errors=[_field("header.Idempotency-Key", "must be 1 to 255 characters")],
            )
            return
        caller = _principal(scope, self.settings)
        if caller is None:  # authentication will refuse it; nothing to remember
            await self.app(scope, receive, send)
            return
        principal, token_hash = caller
        body: bytes = scope.get(BODY_KEY, b"")
        fingerprint = hashlib.sha256(
            scope["method"].encode() + b" " + scope["path"].encode() + b"\n" + body
        ).hexdigest()
        claim = await run_in_threadpool(self._claim, principal, key, fingerprint, token_hash)
        if claim.outcome == "unknown_token":  # revoked or rotated: the route answers 401
            await self.app(scope, receive, send)
            return
        if claim.outcome == "mismatch":
            await _send_problem(
                send,
                422,
                "Idempotency-Key reused",
                "this Idempotency-Key was used with a different request body or path",
                slug="idempotency-key-reused",
                errors=[_field("header.Idempotency-Key", "already used for another request")],
            )
            return
        if claim.outcome == "in_flight":
            await _send_problem(
                send,
                409,
                "Request with this Idempotency-Key is in flight",
                "a request with this Idempotency-Key is still being processed; retry later",
                slug="idempotency-in-flight",
                headers={"Retry-After": "1"},
            )
            return
        if claim.outcome == "replay":
            assert claim.record is not None
            self.stats.replays.inc()
            await _replay(send, claim.record)
            return
        await self._run(scope, receive, send, principal, key)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, principal: str, key: str
    ) -> None:
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
        except BaseException:
            await run_in_threadpool(self._release, principal, key)
            raise
        # Remember final answers; let a retry run again after a server error, a rate limit, a
        # conflict with the current state (which may change), or a refusal that depends on
        # the caller's credentials or role rather than on the request.
        if 200 <= status < 500 and status not in (401, 403, 409, 429):
            body = _redact(b"".join(chunks), scope.get(SECRET_FIELDS_KEY, ()))
            await run_in_threadpool(self._complete, principal, key, status, headers, body)
        else:
            await run_in_threadpool(self._release, principal, key)

    # --- database side (runs in the thread pool) -------------------------------------------

    def _claim(
        self, principal: str, key: str, fingerprint: str, token_hash: str | None = None
    ) -> _Claim:
        now = datetime.now(UTC)
        for _ in range(3):
            with self.sessions.begin() as db:
                if token_hash is not None and (
                    db.scalar(select(Sensor.id).where(Sensor.token_hash == token_hash)) is None
                ):
                    return _Claim("unknown_token")
                rec = db.get(IdempotencyRecord, (principal, key), with_for_update=True)
                if rec is not None and rec.expires_at <= now:
                    db.delete(rec)
                    db.flush()
                    rec = None
                if rec is None:
                    try:
                        with db.begin_nested():
                            db.add(
                                IdempotencyRecord(
                                    principal=principal,
                                    key=key,
                                    fingerprint=fingerprint,
                                    state="in_flight",
                                    locked_until=now
                                    + timedelta(seconds=self.settings.idempotency_lease_s),
                                    expires_at=now
                                    + timedelta(seconds=self.settings.idempotency_ttl_s),
                                )
                            )
                    except IntegrityError:
                        continue  # another process claimed it first: read its record
                    return _Claim("proceed")
                if rec.fingerprint != fingerprint:
                    return _Claim("mismatch")
                if rec.state == "done":
                    db.expunge(rec)
                    return _Claim("replay", rec)
                if rec.locked_until > now:
                    return _Claim("in_flight")
                # The process holding the claim died: take it over.
                rec.locked_until = now + timedelta(seconds=self.settings.idempotency_lease_s)
                return _Claim("proceed")
        return _Claim("in_flight")

    def _complete(
        self, principal: str, key: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        kept = [
            [k.decode("latin-1"), v.decode("latin-1")]
            for k, v in headers
            if k.lower() in (b"content-type", b"location", b"retry-after")
        ]
        with self.sessions.begin() as db:
            rec = db.get(IdempotencyRecord, (principal, key))
            if rec is not None:
                rec.state, rec.status_code = "done", status
                rec.response_headers, rec.response_body = kept, body

    def _release(self, principal: str, key: str) -> None:
        with self.sessions.begin() as db:
            db.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.principal == principal,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.state == "in_flight",
                )
            )

    def purge_expired(self) -> int:
        with self.sessions.begin() as db:
            result = db.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= datetime.now(UTC))
            )
            return int(getattr(result, "rowcount", 0) or 0)


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


def _field(field: str, reason: str) -> FieldError:
    return FieldError(field, reason)


def _principal(scope: Scope, settings: Settings) -> tuple[str, str | None] | None:
    """Who is asking, authenticated as far as possible before any stored answer is replayed:
    (principal, sensor token hash to verify). None when the request will be refused anyway."""
    auth = _header(scope, b"authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        # The hash, not the token: keys are stored and must not reveal credentials.
        token_hash = hash_token(token.strip())
        return "sensor:" + token_hash[:40], token_hash
    try:
        # The same rules as every route (gateway secret, header formats); the role is part
        # of the principal, so a viewer never replays what an owner was answered.
        who = identify(HTTPConnection(scope), settings)
    except DomainError:
        return None
    return f"user:{who.user_id}:{who.project_id}:{who.role.name}", None


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

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.stats.requests.labels(scope["method"], name, str(status)).inc()
            self.stats.latency.labels(name).observe(time.perf_counter() - started)
