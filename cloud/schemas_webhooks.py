"""Bodies and answers of webhooks and their deliveries (:mod:`cloud.routers.webhooks`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from cloud.schemas import In, Out

#: The journal kinds a webhook can ask for: the alarm transitions.
WebhookKind = Literal["alarm.raised", "alarm.acknowledged", "alarm.cleared"]
ALARM_KINDS: tuple[WebhookKind, ...] = ("alarm.raised", "alarm.acknowledged", "alarm.cleared")
DeliveryStatus = Literal["pending", "delivered", "failed"]

Url = Field(min_length=1, max_length=2000)


class WebhookIn(In):
    """``url``: where to POST (http or https; a redirect is not followed). ``kinds``: the
    events it gets (default: every alarm transition). ``enabled``: false sends nothing and
    owes nothing until it is true again."""

    url: str = Url
    kinds: list[WebhookKind] = Field(default_factory=lambda: list(ALARM_KINDS), min_length=1)
    enabled: bool = True


class WebhookPatch(In):
    """Fields to change; the secret changes only by ``rotate-secret``."""

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    kinds: list[WebhookKind] | None = Field(default=None, min_length=1)
    enabled: bool | None = None


class WebhookOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    url: str
    kinds: list[WebhookKind]
    enabled: bool
    #: The start and end of the current secret, to tell which one a receiver holds.
    secret_preview: str
    #: After a rotation: until when deliveries are signed with the previous secret as well.
    previous_secret_until: datetime | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(BaseModel):
    webhook: WebhookOut
    #: The signing secret (``whsec_...``), in this answer only. A replay of the request (same
    #: Idempotency-Key) answers ``null`` with ``secret_redacted``.
    secret: str | None
    secret_redacted: str | None = None


class DeliveryOut(Out):
    id: uuid.UUID
    webhook_id: uuid.UUID
    #: The event's id, sent as ``Benchlink-Webhook-Id`` and ``id``: the same in every attempt.
    message_id: uuid.UUID
    kind: str
    occurred_at: datetime
    status: DeliveryStatus
    attempts: int
    #: When it is tried next (pending ones).
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
