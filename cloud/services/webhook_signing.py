"""Webhook signatures, as the Standard Webhooks scheme makes them (so its receiver libraries
verify ours): a secret ``whsec_<base64 key>``; per attempt, HMAC-SHA256 with the key over
``{id}.{timestamp}.{body}``, sent as ``v1,<base64>``; several space-separated signatures when
more than one secret is valid (the previous one, for a while after a rotation). Pure: no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> tuple[str, str]:
    """(secret, a preview safe to show). 24 random bytes: the key length Standard Webhooks
    senders use, 192 bits."""
    secret = PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()
    return secret, f"{secret[:10]}…{secret[-4:]}"


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 of HMAC-SHA256(key, id.timestamp.body)>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: one signature per valid secret, the current one first."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_)
