"""What the reliability tests compare: readings captured at the edge and stored in the cloud,
read straight from each database (not through the API, whose paging could hide a copy)."""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from edge.buffer import Buffer

Key = tuple[datetime, float]


def buffer_readings(path: Path) -> collections.Counter[Key]:
    """(timestamp, raw value) of every reading committed in the edge's buffer."""
    buf = Buffer(path)
    try:
        rows = buf.conn.execute("SELECT ts, raw_value FROM readings").fetchall()
    finally:
        buf.close()
    return collections.Counter((datetime.fromisoformat(ts), raw) for ts, raw in rows)


def cloud_readings(database_url: str, sensor_id: str) -> collections.Counter[Key]:
    """(timestamp, raw value) of every row the cloud stored for the sensor."""
    from cloud.db.engine import make_engine
    from cloud.db.models import TelemetryReading as R

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(R.ts, R.raw_value).where(R.sensor_id == uuid.UUID(sensor_id))
            ).all()
    finally:
        engine.dispose()
    return collections.Counter((ts.astimezone(UTC), raw) for ts, raw in rows)


@dataclass(frozen=True)
class Tally:
    """Captured against stored: ``lost`` never arrived, ``doubled`` arrived more than once,
    ``foreign`` arrived without having been captured."""

    captured: int
    stored: int
    lost: int
    doubled: int
    foreign: int

    @property
    def exact(self) -> bool:
        return self.lost == self.doubled == self.foreign == 0


def tally(captured: collections.Counter[Key], stored: collections.Counter[Key]) -> Tally:
    lost = sum((captured - stored).values())
    doubled = sum(n - 1 for n in stored.values() if n > 1)
    foreign = sum(1 for k in stored if k not in captured)
    return Tally(sum(captured.values()), sum(stored.values()), lost, doubled, foreign)


def cloud_metrics(base_url: str) -> dict[str, Any]:
    """The cloud's counters that say what the faults did: answers replayed for a re-sent key,
    copies dropped, 5xx answered (one process: with several workers each has its own)."""
    import httpx

    sums: dict[str, Any] = {"replays": 0.0, "duplicates": 0.0, "http_5xx": 0.0, "http_503": 0.0}
    sums["lines_5xx"] = lines = []
    for line in httpx.get(base_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("benchlink_idempotent_replays_total ") or line.startswith(
            'benchlink_telemetry_batches_total{outcome="duplicate"}'
        ):  # a telemetry batch re-sent after a lost answer is counted as a duplicate batch
            sums["replays"] += float(line.split()[-1])
        elif line.startswith("benchlink_duplicate_readings_total "):
            sums["duplicates"] += float(line.split()[-1])
        elif line.startswith("benchlink_http_requests_total{") and 'status="5' in line:
            sums["http_503" if 'status="503"' in line else "http_5xx"] += float(line.split()[-1])
            lines.append(line)
    return sums
