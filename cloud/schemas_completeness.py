"""Response bodies of the completeness answers (``GET .../completeness``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

#: most gaps one answer lists (the counts always cover all of them)
MAX_GAPS = 100


class Gap(BaseModel):
    """Edge sequence numbers ``first``..``last`` of a sensor that were captured and are
    neither in the cloud, nor waiting at the edge, nor set aside there."""

    sensor_id: uuid.UUID
    epoch: uuid.UUID
    first: int
    last: int
    count: int
    #: the timestamp of the reading just before the gap and just after it, where the cloud
    #: holds them (the missing readings lie between)
    after_ts: datetime | None = None
    before_ts: datetime | None = None


class Counts(BaseModel):
    #: readings numbered at the edge for this scope (None when no edge reported them: a
    #: sensor whose edge sends no heartbeat, see ``edge_report``)
    captured: int | None
    #: numbered readings the cloud holds
    arrived: int
    #: readings the cloud holds that were sent without edge sequence numbers (e.g. by hand
    #: with curl): counted here, outside the accounting
    arrived_without_edge_accounting: int
    #: readings waiting at the edge (not yet sent, or on their way)
    waiting: int
    #: readings set aside at the edge (dead-lettered), by reason
    dead_lettered: int
    dead_lettered_by_reason: dict[str, int] = Field(default_factory=dict)
    #: captured - arrived - waiting - dead_lettered: readings lost somewhere (None when
    #: ``captured`` is unknown)
    unaccounted: int | None


class SensorCompleteness(Counts):
    sensor_id: uuid.UUID
    #: the edge buffer whose numbers these are (None: readings without numbers only)
    epoch: uuid.UUID | None
    #: whether an edge heartbeat reported these numbers (captured, waiting, dead-lettered);
    #: without one only the holes between arrived numbers can be named as gaps
    edge_report: bool
    #: when that heartbeat was received
    reported_at: datetime | None = None
    #: dead-lettered readings the edge's report left out (its oldest ranges: the report's
    #: lists are capped, and a heartbeat over its size limit is cut): where they belong to
    #: this session they are counted in ``unaccounted`` (``benchlink-edge dead-letter list``
    #: at the bench shows them)
    dead_lettered_not_reported: int = 0


class SessionCompleteness(Counts):
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    #: "full": every numbered sensor is reported by its edge and nothing arrived without
    #: numbers; "partial": some readings are outside the accounting; "none": no edge
    #: accounting at all
    edge_accounting: str
    #: a sentence saying what the numbers cover
    note: str
    gaps: list[Gap] = Field(default_factory=list, max_length=MAX_GAPS)
    #: the gaps are more than those listed
    gaps_truncated: bool = False
    sensors: list[SensorCompleteness] = Field(default_factory=list)


class RunCompleteness(Counts):
    run_id: uuid.UUID
    edge_accounting: str
    sessions: list[SessionCompleteness] = Field(default_factory=list)
