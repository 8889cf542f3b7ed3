"""Serial source: read a port (blocking pyserial, on a thread), decode lines, commit readings.

Several sensors may share one port (CSV ``channel,value``): each takes its ``channel``; a port
with one sensor and no channel takes every sample. Faults (open circuit, ...) are logged and
counted, never stored as readings. A read error (unplugged adapter) closes the port, which is
reopened with jittered capped backoff; readings are timestamped in UTC at the edge when the
device sends no time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import serial

from edge.backoff import Backoff
from edge.buffer import BufferFull, NewReading, Write
from edge.config import SensorConfig
from edge.metrics import EdgeMetrics
from edge.writer import Writer

log = logging.getLogger("benchlink.edge.serial")

READ_TIMEOUT_S = 0.1


class SerialSource:
    def __init__(
        self,
        port: str,
        sensors: Sequence[SensorConfig],
        writer: Writer,
        metrics: EdgeMetrics,
        *,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        if not sensors:
            raise ValueError("a serial source needs at least one sensor")
        self.port, self.sensors, self.writer, self.metrics = port, list(sensors), writer, metrics
        first = self.sensors[0]
        self.baudrate, self.protocol, self.max_line = first.baudrate, first.protocol, first.max_line
        self.by_channel = {s.channel: str(s.sensor_id) for s in self.sensors}
        self.backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.state: Literal["closed", "open", "backoff", "stopped"] = "closed"
        self.lines_committed = 0
        self.readings_committed = 0
        self.dropped = 0
        self._skipped_seen = 0

    def _sensor_for(self, channel: str | None) -> str | None:
        if channel in self.by_channel:
            return self.by_channel[channel]
        if len(self.sensors) == 1 and self.sensors[0].channel is None:
            return str(self.sensors[0].sensor_id)
        return None

    def _open(self) -> serial.Serial:
        return serial.Serial(self.port, self.baudrate, timeout=READ_TIMEOUT_S)

    async def run(self) -> None:
        from hardware.protocols import make_decoder

        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    port = await loop.run_in_executor(None, self._open)
                except (serial.SerialException, OSError) as exc:
                    self.state = "backoff"
                    delay = self.backoff.next()
                    self.metrics.errors.labels("serial_open").inc()
                    log.warning("%s: cannot open (%s); retrying in %.1fs", self.port, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self.state = "open"
                log.info("%s: open (%s, %d baud)", self.port, self.protocol, self.baudrate)
                decoder = make_decoder(self.protocol, max_line=self.max_line)
                self._skipped_seen = 0
                try:
                    await self._pump(port, decoder)
                except (serial.SerialException, OSError) as exc:
                    self.metrics.errors.labels("serial_read").inc()
                    log.warning("%s: lost (%s); reopening", self.port, exc)
                finally:
                    await loop.run_in_executor(None, port.close)
                self.state = "backoff"
                await asyncio.sleep(self.backoff.next())
        finally:
            self.state = "stopped"

    async def _pump(self, port: serial.Serial, decoder: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data: bytes = await loop.run_in_executor(None, _read_some, port)
            if not data:
                continue
            self.backoff.reset()
            now = datetime.now(UTC)
            readings: list[NewReading] = []
            for item in decoder.feed(data):
                if hasattr(item, "kind"):  # a Fault
                    self.metrics.serial_faults.labels(item.kind).inc()
                    log.warning("%s: device fault %s: %s", self.port, item.kind, item.detail)
                    continue
                sensor_id = self._sensor_for(item.channel)
                if sensor_id is None:
                    self.metrics.serial_skipped.labels(self.port).inc()
                    continue
                meta = dict(item.meta) if item.meta else None
                readings.append(NewReading(sensor_id, item.timestamp or now, item.value, meta))
            skipped = decoder.stats.skipped
            if skipped > self._skipped_seen:
                self.metrics.serial_skipped.labels(self.port).inc(skipped - self._skipped_seen)
                log.info(
                    "%s: skipped %d line(s): %s",
                    self.port,
                    skipped - self._skipped_seen,
                    decoder.stats.last_skip_reason,
                )
                self._skipped_seen = skipped
            if readings:
                await self._commit(readings)

    async def _commit(self, readings: list[NewReading]) -> None:
        try:
            result = await self.writer.submit(Write(readings=readings), source="serial")
        except BufferFull:
            # A serial device cannot be told to wait: the lines are lost, loudly and counted.
            self.dropped += len(readings)
            self.metrics.dropped.labels("buffer_full").inc(len(readings))
            return
        self.readings_committed += result.committed


def _read_some(port: serial.Serial) -> bytes:
    waiting = port.in_waiting
    data = port.read(max(1, min(waiting, 65536)))
    return bytes(data)


def group_by_port(sensors: Sequence[SensorConfig]) -> dict[str, list[SensorConfig]]:
    ports: dict[str, list[SensorConfig]] = {}
    for s in sensors:
        if s.source == "serial" and s.port:
            ports.setdefault(s.port, []).append(s)
    return ports
