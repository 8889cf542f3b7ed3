"""Short-lived signed stream tickets for browsers (which cannot set headers on WebSocket or
EventSource).

A ticket is ``<payload>.<signature>``: the payload is base64url JSON
``{"p": project_id, "u": user_id, "r": role, "exp": unix_seconds, "j": ticket_id}``, the
signature is HMAC-SHA256 of the payload text under the deployment's ticket secret. Every API
process must share that secret (``BENCHLINK_STREAM_TICKET_SECRET``) so that a ticket issued by
one process is accepted by another behind the same address. A ticket opens one stream: its id is
recorded when used (:mod:`cloud.live.access`), so a copy left in a log or a proxy is useless.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from cloud.errors import Unauthenticated
from cloud.identity import Principal, Role

TICKET_TTL_S = 60


@dataclass(frozen=True)
class Ticket:
    text: str
    expires_at: float


@dataclass(frozen=True)
class Claims:
    principal: Principal
    ticket_id: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def issue(
    secret: bytes, principal: Principal, *, ttl_s: int = TICKET_TTL_S, now: float | None = None
) -> Ticket:
    expires = (time.time() if now is None else now) + ttl_s
    body = {
        "p": str(principal.project_id),
        "u": str(principal.user_id),
        "r": principal.role.name,
        "exp": round(expires, 3),
        "j": secrets.token_urlsafe(16),
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return Ticket(f"{payload}.{_sign(secret, payload)}", expires)


def verify(secret: bytes, ticket: str, *, now: float | None = None) -> Principal:
    """The principal a ticket stands for; Unauthenticated if forged, malformed or expired."""
    return claims(secret, ticket, now=now).principal


def claims(secret: bytes, ticket: str, *, now: float | None = None) -> Claims:
    """What a ticket says; Unauthenticated if forged, malformed or expired."""
    payload, _, signature = ticket.partition(".")
    # Compare the signature before parsing anything an attacker wrote.
    # As bytes: compare_digest refuses non-ASCII str, and a ticket is attacker-written.
    expected = _sign(secret, payload).encode()
    if not signature or not hmac.compare_digest(signature.encode("utf-8", "replace"), expected):
        raise Unauthenticated("invalid stream ticket")
    try:
        body = json.loads(_unb64(payload))
        principal = Principal(
            user_id=uuid.UUID(body["u"]), project_id=uuid.UUID(body["p"]), role=Role[body["r"]]
        )
        expires = float(body["exp"])
        ticket_id = str(body["j"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise Unauthenticated("malformed stream ticket") from None
    if (time.time() if now is None else now) >= expires:
        raise Unauthenticated("stream ticket expired; request a new one")
    return Claims(principal, ticket_id, expires)
