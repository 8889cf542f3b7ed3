"""Webhooks of the project (``/webhooks``), owner only: where its alarm transitions are
POSTed, signed; the secret shown once; what each was sent (``/webhooks/{id}/deliveries``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from cloud.deps import DbSession, Owner
from cloud.middleware import SECRET_FIELDS_KEY
from cloud.schemas import Page
from cloud.schemas_webhooks import (
    DeliveryOut,
    DeliveryStatus,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookWithSecret,
)
from cloud.services import webhooks as service

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

Limit = Annotated[int, Query(ge=1, le=500)]


def secret_response(request: Request, response: Response) -> None:
    """The answer carries the secret: never cached, never kept by the idempotency store."""
    response.headers["Cache-Control"] = "no-store"
    request.scope[SECRET_FIELDS_KEY] = ("secret",)


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(secret_response)])
def create_webhook(body: WebhookIn, db: DbSession, caller: Owner) -> WebhookWithSecret:
    """A receiver of the project's events. The signing secret is in this answer only."""
    hook, secret = service.create(db, caller, body)
    return WebhookWithSecret(webhook=WebhookOut.model_validate(hook), secret=secret)


@router.get("")
def list_webhooks(
    db: DbSession, caller: Owner, limit: Limit = 50, cursor: str | None = None
) -> Page[WebhookOut]:
    """The project's webhooks, newest first."""
    rows, nxt = service.list_webhooks(db, caller, limit, cursor)
    return Page(items=[WebhookOut.model_validate(h) for h in rows], next_cursor=nxt)


@router.get("/{webhook_id}")
def get_webhook(webhook_id: uuid.UUID, db: DbSession, caller: Owner) -> WebhookOut:
    return WebhookOut.model_validate(service.get(db, caller, webhook_id))


@router.patch("/{webhook_id}")
def patch_webhook(
    webhook_id: uuid.UUID, body: WebhookPatch, db: DbSession, caller: Owner
) -> WebhookOut:
    """Change ``url``, ``kinds`` or ``enabled``; a new URL, or switching it back on, sends
    what is still owed at once."""
    return WebhookOut.model_validate(service.patch(db, caller, webhook_id, body))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: uuid.UUID, db: DbSession, caller: Owner) -> Response:
    """The webhook and its deliveries; nothing more is sent to it."""
    service.delete_webhook(db, caller, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", dependencies=[Depends(secret_response)])
def rotate_secret(webhook_id: uuid.UUID, db: DbSession, caller: Owner) -> WebhookWithSecret:
    """A new signing secret, in this answer only. For 24 hours deliveries carry a signature
    by the previous secret as well, so the receiver can switch without refusing any."""
    hook, secret = service.rotate(db, caller, webhook_id)
    return WebhookWithSecret(webhook=WebhookOut.model_validate(hook), secret=secret)


@router.get("/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: uuid.UUID,
    db: DbSession,
    caller: Owner,
    status: DeliveryStatus | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[DeliveryOut]:
    """What the webhook was sent and how it went, newest first: ``status`` (pending,
    delivered, failed), ``attempts``, the last answer's status code or error."""
    rows, nxt = service.deliveries(db, caller, webhook_id, status, limit, cursor)
    return Page(items=[DeliveryOut.model_validate(d) for d in rows], next_cursor=nxt)
