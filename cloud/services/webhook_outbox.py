"""The webhook outbox: an event a webhook wants becomes a delivery row in the transaction that
records it (:func:`cloud.services.journal.record` calls :func:`enqueue`), so a change
committed is a delivery owed, and a change rolled back is none. The deliverer
(:mod:`cloud.services.webhook_delivery`) sends the rows after the commit.

Only the kinds in :data:`KINDS` cost anything here; every other journal event (telemetry
ingest's among them) passes by a set lookup."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from cloud.db import models
from cloud.schemas_webhooks import ALARM_KINDS

#: The journal kinds a webhook may ask for.
KINDS: frozenset[str] = frozenset(ALARM_KINDS)

W = models.Webhook
_INSERT = insert(cast(Table, models.WebhookDelivery.__table__))


def enqueue(db: Session, kind: str, project_id: uuid.UUID, data: dict[str, Any]) -> int:
    """A delivery of this event to each enabled webhook of the project that wants ``kind``;
    how many. ``data`` must be JSON already."""
    hooks = db.execute(
        select(W.id, W.kinds).where(W.project_id == project_id, W.enabled.is_(True))
    ).all()
    wanted = [hook_id for hook_id, kinds in hooks if kind in kinds]
    if not wanted:
        return 0
    now = datetime.now(UTC)
    message_id = uuid.uuid4()  # the event's: one for all its webhooks and all attempts
    db.execute(
        _INSERT,
        [
            {
                "id": uuid.uuid4(),
                "webhook_id": hook_id,
                "project_id": project_id,
                "message_id": message_id,
                "kind": kind,
                "occurred_at": now,
                "data": data,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for hook_id in wanted
        ],
    )
    return len(wanted)
