"""A source that is no part of benchlink, as a third-party package would write one: each
``source = "toy"`` sensor counts 0, 1, 2, ... ``count - 1`` as its readings, one every
``every_s`` seconds, then goes quiet. ``behind_s``: its readings are stamped that long
before they are captured (a device that stamps its own readings, its clock behind).

Installed by an entry point (``benchlink.edge_sources``: ``toy = "tests.edge.toy_source"``);
nothing under ``edge/`` names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field

from edge.buffer import BufferFull, NewReading, Write
from edge.config import SensorConfig
from edge.sources.base import Source, SourceContext, SourceKind, register


class ToySensor(SensorConfig):
    source: Literal["toy"]
    count: int = Field(ge=1)
    every_s: float = Field(0.01, gt=0)
    behind_s: float = Field(0.0, ge=0)


class Counter:
    def __init__(self, sensor: ToySensor, ctx: SourceContext) -> None:
        self.sensor, self.ctx = sensor, ctx

    async def run(self) -> None:
        sid = str(self.sensor.sensor_id)
        for n in range(self.sensor.count):
            stamp = datetime.now(UTC) - timedelta(seconds=self.sensor.behind_s)
            reading = NewReading(sid, stamp, float(n), {"seq": n})
            try:
                await self.ctx.writer.submit(Write([reading]), source="toy")
            except BufferFull:
                self.ctx.metrics.dropped.labels("buffer_full").inc()
            await asyncio.sleep(self.sensor.every_s)


def start(sensors: Sequence[ToySensor], ctx: SourceContext) -> dict[str, Source]:
    return {f"toy:{s.sensor_id}": Counter(s, ctx) for s in sensors}


KIND = register(SourceKind("toy", ToySensor, start))
