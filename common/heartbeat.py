"""Wire model of an edge's heartbeat (``PUT /api/v1/edges/{id}/heartbeat``).

The edge sends it every ``[edge] heartbeat_s`` and after sync rounds; the cloud keeps the
last one per edge; ``benchlink-edge status --json`` prints the same document built from the
same code, so what an operator reads at the bench and in the portal cannot drift apart.

Times that the edge measures itself are ages (seconds before ``sent_at``), not timestamps: an
edge whose clock is off still says truthfully how long a reading has waited. The reading's own
``last_reading_ts`` is the timestamp it carries (as stored, as the cloud will receive it).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from common.wire import UtcDatetime

#: what happens when the disk budget is spent (docs/edge.md, "Disk budget"): new readings
#: are refused -- MQTT messages stay unacknowledged at the broker, serial lines are dropped
#: and counted. Nothing already stored is ever deleted to make room.
FULL_POLICY: Literal["refuse-new"] = "refuse-new"

#: most sensors one heartbeat may describe (a bench PC has a handful)
MAX_SENSORS = 1000
#: the most bytes an edge sends as one heartbeat (its JSON); the cloud's body limit is
#: 1 MiB by default (``BENCHLINK_MAX_BODY_BYTES``). A bigger document is cut down at the
#: edge, the least useful detail first, and says what it left out (:class:`Truncated`).
MAX_HEARTBEAT_BYTES = 512 * 1024


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ClockEstimate(Wire):
    #: the cloud's clock minus the edge's (add it to the edge's time to get the cloud's)
    offset_ms: float
    #: half the round trip of the best recent sample plus the spread of the recent ones
    uncertainty_ms: float = Field(ge=0)
    #: round trip of the last sample
    rtt_ms: float = Field(ge=0)
    samples: int = Field(ge=1)
    #: past this (``[clock] max_offset_ms``) the edge logs a warning
    max_offset_ms: float = Field(gt=0)
    #: seconds since the last sample
    age_s: float = Field(ge=0)


class BufferState(Wire):
    #: the buffer file's own id (stable for its life; the default MQTT client id comes from it)
    id: str = Field(max_length=64)
    path: str = Field(max_length=4096)
    used_bytes: int = Field(ge=0)
    max_bytes: int = Field(gt=0)
    full_policy: Literal["refuse-new"] = FULL_POLICY
    #: bytes the buffer can still write on its filesystem (free space plus its own free
    #: pages), and the reserve below which new readings are refused (``min_free_bytes``)
    disk_room_bytes: int | None = Field(default=None, ge=0)
    min_free_bytes: int | None = Field(default=None, ge=0)
    #: why new readings are refused now: the budget is spent, or the disk is down to its
    #: reserve; None while there is room
    full: Literal["budget", "disk"] | None = None


#: most ranges of each kind one sensor's sequence report lists (edge.buffer.sequence)
MAX_SEQ_RANGES = 200


class SeqSession(Wire):
    """Numbers ``first``..``last`` of the sensor went to this run / capture session."""

    run_id: UUID
    capture_session_id: UUID
    first: int = Field(ge=1)
    last: int = Field(ge=1)


class SeqDead(Wire):
    """Numbers ``first``..``last`` are set aside at the edge (a dead-lettered batch)."""

    first: int = Field(ge=1)
    last: int = Field(ge=1)
    reason: str = Field(max_length=500)


class SeqLeftOut(Wire):
    """What a sequence report does not list (its lists are capped, and a heartbeat over
    :data:`MAX_HEARTBEAT_BYTES` is cut). Sessions are left out whole, the oldest first: a
    session the report does not name is not accounted (captured unknown), never counted
    short. Dead-lettered ranges left out are the oldest: their readings count as
    unaccounted in the cloud (an over-count, never a loss hidden)."""

    #: capture sessions left out (all of their segments)
    sessions: int = Field(default=0, ge=0)
    #: dead-lettered ranges left out, and the readings in them
    dead: int = Field(default=0, ge=0)
    dead_readings: int = Field(default=0, ge=0)


class SequenceReport(Wire):
    """The sensor's sequence numbers at the edge: what the cloud cannot know by itself about
    the readings it has not received (docs/fleet.md, "Proof of completeness")."""

    #: the buffer's id: the numbers start from 1 again in a new buffer file
    epoch: UUID
    #: the highest number given (0: none yet)
    captured_upto: int = Field(ge=0)
    sessions: list[SeqSession] = Field(default_factory=list, max_length=MAX_SEQ_RANGES)
    #: ``[first, last]`` ranges not yet accepted by the cloud and not set aside
    waiting: list[tuple[int, int]] = Field(default_factory=list, max_length=MAX_SEQ_RANGES)
    dead: list[SeqDead] = Field(default_factory=list, max_length=MAX_SEQ_RANGES)
    #: None when everything is listed (left out of the JSON: a cloud older than the field
    #: takes the report)
    left_out: SeqLeftOut | None = None


class SensorState(Wire):
    source: str = Field(max_length=64)
    #: the source's state: serial closed | syncing | open | backoff; MQTT disconnected |
    #: connected | backoff; ``stopped`` when no daemon is running
    source_state: str = Field(max_length=32)
    run_id: UUID
    capture_session_id: UUID
    #: the newest reading in the buffer: its timestamp, and how long ago it was captured
    last_reading_ts: UtcDatetime | None = None
    last_reading_age_s: float | None = Field(default=None, ge=0)
    #: readings not yet accepted by the cloud and not set aside: pending + inflight
    waiting: int = Field(ge=0)
    #: how long the oldest of them has waited since it was captured
    oldest_waiting_age_s: float | None = Field(default=None, ge=0)
    #: readings not yet sent (sealed or not), and in a batch on its way
    pending: int = Field(ge=0)
    inflight: int = Field(ge=0)
    #: readings accepted by the cloud and still in the buffer (until ``retention_s``)
    synced: int = Field(ge=0)
    #: readings set aside in dead-lettered batches (``benchlink-edge dead-letter list``)
    dead: int = Field(ge=0)
    #: readings captured per second over the last minute
    rate_per_s: float = Field(ge=0)
    last_error: str | None = Field(default=None, max_length=2000)
    #: a device that stamps its own readings (MQTT payloads with a timestamp): the median of
    #: its recent readings' timestamp minus their arrival at the edge (the edge's clock), ms;
    #: None when it sent none
    device_skew_ms: float | None = None
    #: the sensor's sequence numbers (absent from an edge that does not number readings)
    sequence: SequenceReport | None = None


class Truncated(Wire):
    """What the edge left out of a heartbeat to keep it under its size limit (the least
    useful detail first: reasons shortened, then the oldest sessions and dead-lettered
    ranges, waiting ranges joined, whole sequence reports, whole sensors)."""

    #: the whole document's size, and the limit it was cut to (bytes of JSON)
    full_bytes: int = Field(ge=0)
    limit_bytes: int = Field(gt=0)
    #: dead-lettered reasons shortened to this many characters (None: kept whole)
    reasons_cut_to: int | None = Field(default=None, ge=0)
    #: capture sessions and dead-lettered ranges left out of sequence reports (the counts
    #: per sensor are in its report's ``left_out``)
    sessions: int = Field(default=0, ge=0)
    dead: int = Field(default=0, ge=0)
    #: sensors whose waiting ranges were joined into fewer (they cover more numbers: errs
    #: towards "waiting", never towards "missing")
    waiting_joined: int = Field(default=0, ge=0)
    #: sensors listed without their sequence report, and sensors left out altogether
    sequence_reports: int = Field(default=0, ge=0)
    sensors: int = Field(default=0, ge=0)


class Heartbeat(Wire):
    schema_version: Literal[1] = 1
    #: the edge's id in the cloud (``[edge] id``); None in a local status without one
    edge_id: UUID | None = None
    version: str = Field(max_length=64)
    host: str = Field(max_length=255)
    #: None in a local status when no daemon is running
    uptime_s: float | None = Field(default=None, ge=0)
    #: when this document was built, by the edge's clock
    sent_at: UtcDatetime
    #: the edge's period: the cloud calls it stale after three of them without a word
    heartbeat_s: float = Field(gt=0)
    #: whether a daemon is running on this buffer (always true in a heartbeat)
    running: bool = True
    buffer: BufferState
    #: dead-letter records not retried (rejected payloads, dead batches, ...)
    dead_letters: int = Field(ge=0)
    clock: ClockEstimate | None = None
    #: by sensor id
    sensors: dict[str, SensorState] = Field(default_factory=dict, max_length=MAX_SENSORS)
    #: what was left out to keep the document under the edge's size limit; None (and absent
    #: from the JSON, so a cloud older than the field takes it) when nothing was
    truncated: Truncated | None = None
