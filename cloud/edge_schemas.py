"""Request and response bodies of ``/api/v1/edges`` (the heartbeat's model is in common/)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from cloud.schemas import In, NameText, Out
from common.heartbeat import Heartbeat

#: never: no heartbeat yet; online: heard within 3 x its heartbeat_s; stale: silent longer
EdgeState = Literal["never", "online", "stale"]


class EdgeIn(In):
    project_id: uuid.UUID | None = None
    name: NameText


class HealthCondition(BaseModel):
    #: edge_silent | sensor_silent | backlog_old | clock_offset | buffer_full
    rule: str
    #: the sensor it is about (sensor_silent, backlog_old), else null
    sensor_id: uuid.UUID | None = None
    #: the value that broke the limit when it started (seconds, a share, ms), and the limit
    value: float
    limit: float
    since: datetime


class EdgeOut(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    token_preview: str | None
    token_status: str
    token_issued_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: computed when read, by the cloud's clock (see :func:`cloud.services.edges.health`)
    state: EdgeState
    #: when the cloud received the last heartbeat, and how long it has heard nothing since
    heartbeat_at: datetime | None
    silent_s: float | None
    heartbeat: Heartbeat | None
    #: the health conditions in force (cloud.health), oldest first
    health: list[HealthCondition] = []


class EdgeWithToken(BaseModel):
    edge: EdgeOut
    #: The full token, in this answer only (as a sensor's: see SensorWithToken).
    token: str | None
    token_redacted: str | None = None


class ServerTime(BaseModel):
    #: the server's clock when it answered, in microseconds since 1970 (UTC)
    time_us: int
    #: when the request reached this handler: a client that wants NTP's four timestamps
    #: takes this as the server's receive time and ``time_us`` as its send time
    received_us: int


def now_us() -> int:
    """The server's clock, in microseconds since 1970."""
    return time.time_ns() // 1000
