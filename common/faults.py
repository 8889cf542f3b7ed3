"""A sensor's device fault on the wire: what an edge sends when a probe is open or shorted.

A fault has no value, so it is not a reading. Consecutive faults of one kind are one
**episode** (a probe open for an hour at 10 Hz is one episode of 36,000 faults, not 36,000
messages): its id (chosen by the sender), its kind, the time of its first and last fault and
their count. A sender sends the episode again, under the same id, each time it has grown;
the cloud keeps the latest, so a repeat (a retry after a lost answer) changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Where a sensor's fault episodes are sent (``sensor_id`` filled in).
FAULTS_PATH = "/api/v1/sensors/{sensor_id}/faults"
#: Longest ``detail`` taken.
MAX_DETAIL = 200
#: How the decoders name faults: open_circuit, short_to_gnd, short_to_vcc, device_fault.
KIND_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class FaultEpisode(BaseModel):
    """One episode of a sensor's device faults, as it stands (``POST`` again as it grows)."""

    model_config = ConfigDict(extra="forbid")

    episode_id: UUID = Field(description="chosen by the sender; names the episode for good")
    run_id: UUID
    capture_session_id: UUID
    kind: Annotated[str, Field(pattern=KIND_PATTERN, description="e.g. open_circuit")]
    first_timestamp: AwareDatetime
    last_timestamp: AwareDatetime
    count: Annotated[int, Field(ge=1, le=2**53, description="faults in the episode so far")]
    detail: Annotated[str | None, Field(max_length=MAX_DETAIL)] = None


class FaultStored(BaseModel):
    """The answer: the episode as the cloud now has it."""

    episode_id: UUID
    sensor_id: UUID
    kind: str
    first_timestamp: datetime
    last_timestamp: datetime
    count: int
    #: new (first seen), grown (a later part of it), unchanged (nothing new: a repeat)
    stored: str


class FaultOut(BaseModel):
    """An episode as the cloud has it (``GET /api/v1/sensors/{id}/faults``)."""

    episode_id: UUID
    sensor_id: UUID
    run_id: UUID
    capture_session_id: UUID
    kind: str
    detail: str | None
    first_timestamp: datetime
    last_timestamp: datetime
    count: int
    #: reached the cloud after its capture session ended
    late: bool
