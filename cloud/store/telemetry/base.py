"""The readings of a stored batch, as the telemetry store writes them and the live stream
sends them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

#: The columns of a reading row, in table order.
COLUMNS = (
    "project_id",
    "sensor_id",
    "run_id",
    "capture_session_id",
    "batch_id",
    "ts",
    "raw_value",
    "value",
    "profile_version",
    "late",
    "meta",
)


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A batch's readings in columns (one per field that varies), and what they share."""

    batch_id: int
    project_id: uuid.UUID
    sensor_id: uuid.UUID
    run_id: uuid.UUID
    capture_session_id: uuid.UUID
    profile_version: str
    late: bool
    timestamps: list[datetime]
    #: The timestamps in microseconds since the Unix epoch.
    stamps_us: list[int]
    raw_values: list[float]
    values: list[float]
    metas: list[dict[str, Any] | None]

    def __len__(self) -> int:
        return len(self.stamps_us)

    def only(self, keep: Sequence[int]) -> StoredBatch:
        """The readings at these indices, in this order."""
        return replace(
            self,
            timestamps=[self.timestamps[k] for k in keep],
            stamps_us=[self.stamps_us[k] for k in keep],
            raw_values=[self.raw_values[k] for k in keep],
            values=[self.values[k] for k in keep],
            metas=[self.metas[k] for k in keep],
        )

    def rows(self) -> list[dict[str, Any]]:
        """One dict of :data:`COLUMNS` per reading (for a driver's executemany)."""
        shared = {
            "project_id": self.project_id,
            "sensor_id": self.sensor_id,
            "run_id": self.run_id,
            "capture_session_id": self.capture_session_id,
            "batch_id": self.batch_id,
            "profile_version": self.profile_version,
            "late": self.late,
        }
        return [
            {**shared, "ts": ts, "raw_value": raw, "value": value, "meta": meta}
            for ts, raw, value, meta in zip(
                self.timestamps, self.raw_values, self.values, self.metas, strict=True
            )
        ]
