"""Webhooks of a project, managed by its owner: where its events are POSTed, which kinds,
whether at all, and the secret that signs them (shown once, at creation and at each
rotation). The deliveries themselves: :mod:`cloud.services.webhook_outbox` (owed, in the
transaction of the change) and :mod:`cloud.services.webhook_delivery` (sent).

A webhook's URL is the owner's choice and is called from the cloud's network. Addresses no
receiver has a reason to live at are refused, here for an address written in the URL and at
each delivery for the addresses its name resolves to: link-local ones (169.254.0.0/16, where
cloud metadata services answer, and fe80::/10), unspecified and multicast ones. Loopback and
private addresses are allowed: a lab's receiver is often on its own network. A redirect is
never followed, and nothing of a receiver's answer but its status reaches the API.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.errors import invalid
from cloud.identity import Principal
from cloud.pagination import Keyset, aware_datetime, uid
from cloud.schemas_webhooks import DeliveryStatus, WebhookIn, WebhookPatch
from cloud.services import journal, webhook_signing
from cloud.services.scope import get_in_project, require_project

W, D = models.Webhook, models.WebhookDelivery

#: After a rotation, deliveries are signed with the previous secret too for this long, so a
#: receiver can switch to the new one without refusing deliveries in between.
ROTATION_GRACE = timedelta(hours=24)


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not be delivered to ``ip``, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"{ip} is a link-local address (where cloud metadata services answer)"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a receiver's address"
    return None


def check_url(url: str) -> str:
    """The URL, or 422 naming ``url``: http or https, a host, no address refused above."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise invalid("url", f"is not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise invalid("url", f"must be http or https, not {parsed.scheme or 'relative'}")
    if not parsed.host:
        raise invalid("url", "has no host")
    try:
        ip = ipaddress.ip_address(parsed.host)
    except ValueError:
        return str(parsed)  # a name: its addresses are checked at each delivery
    reason = refused_address(ip)
    if reason is not None:
        raise invalid("url", f"is refused: {reason}")
    return str(parsed)


def create(db: Session, caller: Principal, body: WebhookIn) -> tuple[models.Webhook, str]:
    require_project(db, caller.project_id)
    secret, preview = webhook_signing.new_secret()
    hook = W(
        id=uuid.uuid4(),
        project_id=caller.project_id,
        url=check_url(body.url),
        kinds=_unique(body.kinds),
        enabled=body.enabled,
        secret=secret,
        secret_preview=preview,
        created_by=caller.user_id,
    )
    db.add(hook)
    db.flush()
    _journal(db, caller, "webhook.created", hook, url=hook.url, kinds=hook.kinds)
    return hook, secret


def list_webhooks(
    db: Session, caller: Principal, limit: int, cursor: str | None
) -> tuple[list[models.Webhook], str | None]:
    return _HOOKS.page(db, select(W).where(W.project_id == caller.project_id), limit, cursor)


def get(
    db: Session, caller: Principal, webhook_id: uuid.UUID, lock: bool = False
) -> models.Webhook:
    return get_in_project(db, W, webhook_id, caller.project_id, lock=lock)


def patch(
    db: Session, caller: Principal, webhook_id: uuid.UUID, body: WebhookPatch
) -> models.Webhook:
    hook = get(db, caller, webhook_id, lock=True)
    changes: dict[str, Any] = {}
    for key, given in body.model_dump(exclude_unset=True).items():
        if given is None:  # null means "leave as it is"
            continue
        value = given
        if key == "url":
            value = check_url(given)
        elif key == "kinds":
            value = _unique(given)
        setattr(hook, key, value)
        changes[key] = value
    hook.updated_at = datetime.now(UTC)
    if changes.keys() & {"url", "enabled"}:
        # A receiver fixed or switched back on: what it is owed goes now, not at each
        # delivery's retry time after the failures that led here.
        db.execute(
            update(D)
            .where(D.webhook_id == hook.id, D.status == "pending")
            .values(next_attempt_at=hook.updated_at)
        )
    _journal(db, caller, "webhook.updated", hook, changes=changes)
    return hook


def delete_webhook(db: Session, caller: Principal, webhook_id: uuid.UUID) -> None:
    """The webhook and its deliveries, pending ones included, are gone."""
    hook = get(db, caller, webhook_id, lock=True)
    db.execute(delete(D).where(D.webhook_id == hook.id))
    db.delete(hook)
    _journal(db, caller, "webhook.deleted", hook, url=hook.url)


def rotate(db: Session, caller: Principal, webhook_id: uuid.UUID) -> tuple[models.Webhook, str]:
    """A new secret; the current one goes on signing too for :data:`ROTATION_GRACE`."""
    hook = get(db, caller, webhook_id, lock=True)
    secret, preview = webhook_signing.new_secret()
    hook.previous_secret = hook.secret
    hook.previous_secret_until = datetime.now(UTC) + ROTATION_GRACE
    hook.secret, hook.secret_preview = secret, preview
    hook.updated_at = datetime.now(UTC)
    _journal(db, caller, "webhook.secret_rotated", hook, secret_preview=preview)
    return hook, secret


def deliveries(
    db: Session,
    caller: Principal,
    webhook_id: uuid.UUID,
    status: DeliveryStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[models.WebhookDelivery], str | None]:
    """The webhook's deliveries, newest first."""
    hook = get(db, caller, webhook_id)
    query = select(D).where(D.webhook_id == hook.id)
    if status is not None:
        query = query.where(D.status == status)
    return _DELIVERIES.page(db, query, limit, cursor)


def _unique(kinds: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(kinds))


def _journal(
    db: Session, caller: Principal, kind: str, hook: models.Webhook, /, **payload: Any
) -> None:
    journal.record(
        db, kind, project_id=caller.project_id, actor=caller.actor, webhook_id=hook.id, **payload
    )


_HOOKS = Keyset(
    "webhooks", (W.created_at, W.id), (aware_datetime, uid),
    lambda h: (h.created_at.isoformat(), h.id), descending=True,
)  # fmt: skip
_DELIVERIES = Keyset(
    "webhook_deliveries", (D.created_at, D.id), (aware_datetime, uid),
    lambda d: (d.created_at.isoformat(), d.id), descending=True,
)  # fmt: skip
