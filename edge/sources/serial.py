"""Serial source: read a port (blocking pyserial, on a thread), decode lines, commit readings.

Several sensors may share one port (CSV ``channel,value``): each takes its ``channel``; a port
with one sensor and no channel takes every sample. Device faults (open circuit, ...) have no
value: they are counted, and stored with the readings as fault episodes (consecutive faults
of one kind, see :mod:`edge.buffer.faults`), which the sync sends to the cloud. A read error
(unplugged adapter) closes the port, which is reopened with jittered capped backoff; readings
are timestamped in UTC at the edge when the device sends no time.

Lines are committed in small groups: the pump keeps reading while a commit is under way and
hands the writer what it decoded at most :data:`COALESCE_S` after the first of them (or when the
port goes quiet), so a slow device does not cost one fsync per line. A serial device is never
acknowledged, so nothing is promised to it; the price is honest and bounded: lines read from
the port but not yet committed when the daemon is killed -- at most ``COALESCE_S`` plus one
commit's worth -- are lost, like the lines the device sends while the daemon is down.

Whatever goes wrong -- a decoder bug, an unexpected exception -- is logged and counted, the port
is reopened with backoff, and the source goes on: it never takes the daemon down.

One reader per port: two readers of one tty split its byte stream between them, and a
fragment of a line (``1.2051`` out of ``11.2051``) still decodes as a number. The port is
opened exclusively -- ``flock`` (pyserial's ``exclusive``), which another benchlink-edge
respects, and ``TIOCEXCL``, which makes the kernel refuse any further ``open`` of the tty
(``screen``, ``cat``; only root is exempt) -- and a port held by another reader is retried
with backoff, never shared. For the same reason the first bytes after an open are not
trusted: a line the device had begun before the open arrives without its start. Until the
port has been quiet for one read timeout (a device sends a line in one go) or a line
terminator has passed, bytes are dropped, and a dropped partial line is counted
(``benchlink_edge_serial_partial_lines_total``), never converted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import logging
import re
import termios
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import serial
from pydantic import Field, field_validator

from edge.backoff import Backoff
from edge.buffer import BufferFull, NewFault, NewReading, Write, WriteResult
from edge.config import SensorConfig
from edge.metrics import EdgeMetrics
from edge.sources.base import Source, SourceContext, SourceKind, register
from edge.writer import Writer
from hardware.protocols import PROTOCOLS, Decoder, Fault, make_decoder

log = logging.getLogger("benchlink.edge.serial")

READ_TIMEOUT_S = 0.1
#: longest a decoded line waits to be handed to the writer (the crash-loss window, see above)
COALESCE_S = 0.2
#: most readings handed to the writer at once
MAX_GROUP = 1000
#: commits of this port in flight at most; then the pump waits for the oldest
MAX_INFLIGHT = 64

_TERMINATOR = re.compile(rb"[\r\n]")


class SerialSensor(SensorConfig):
    """A ``[[sensors]]`` table with ``source = "serial"``."""

    source: Literal["serial"]
    port: str = Field(min_length=1)
    baudrate: int = 9600
    protocol: str = "value"
    #: csv: several sensors share one port, each takes its channel
    channel: str | None = None
    max_line: int = Field(512, ge=16)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        if v not in PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(PROTOCOLS)}")
        return v


class PortBusy(OSError):
    """Another process has the port open exclusively."""


def open_exclusive(port: str, baudrate: int, timeout: float) -> serial.Serial:
    """The port, opened so that no other reader can share it (see the module's docstring);
    :class:`PortBusy` if another process holds it."""
    try:
        ser = serial.Serial(port, baudrate, timeout=timeout, exclusive=True)
    except serial.SerialException as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            raise PortBusy(exc.errno, f"{port} is in use by another process") from None
        raise
    # not a tty (a socket, a test double): the flock alone guards it
    with contextlib.suppress(OSError):
        fcntl.ioctl(ser.fileno(), termios.TIOCEXCL)
    return ser


class SerialSource:
    def __init__(
        self,
        port: str,
        sensors: Sequence[SerialSensor],
        writer: Writer,
        metrics: EdgeMetrics,
        *,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        now: Callable[[], float] = time.time,
        correction: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``now``: the edge's clock (the daemon's time source); ``correction``: the ms to
        add to the arrival stamp of a line without a device time (``[clock] correct``), or
        None."""
        if not sensors:
            raise ValueError("a serial source needs at least one sensor")
        self.port, self.sensors, self.writer, self.metrics = port, list(sensors), writer, metrics
        first = self.sensors[0]
        self.baudrate, self.protocol, self.max_line = first.baudrate, first.protocol, first.max_line
        self.by_channel = {s.channel: str(s.sensor_id) for s in self.sensors}
        self.backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.now, self.correction = now, correction
        #: "syncing": open, dropping what may be the tail of a line begun before the open
        self.state: Literal["closed", "syncing", "open", "backoff", "stopped"] = "closed"
        self.lines_committed = 0
        self.readings_committed = 0
        self.dropped = 0
        #: partial lines dropped after an open (see the module's docstring)
        self.partial_lines = 0
        self._skipped_seen = 0
        #: the arrival time given to the last line without a device timestamp
        self._arrival = datetime.min.replace(tzinfo=UTC)
        #: sensor -> (episode id, kind) of its fault episode still going on
        self._episodes: dict[str, tuple[str, str]] = {}
        #: the episodes' faults seen since the last hand-over to the writer, by episode id
        self._faults: dict[str, NewFault] = {}
        self._inflight: collections.deque[asyncio.Future[WriteResult]] = collections.deque()

    def _sensor_for(self, channel: str | None) -> str | None:
        if channel in self.by_channel:
            return self.by_channel[channel]
        if len(self.sensors) == 1 and self.sensors[0].channel is None:
            return str(self.sensors[0].sensor_id)
        return None

    def _open(self) -> serial.Serial:
        return open_exclusive(self.port, self.baudrate, READ_TIMEOUT_S)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._session()
                except (serial.SerialException, OSError) as exc:
                    self.metrics.errors.labels("serial_read").inc()
                    log.warning("%s: lost (%s); reopening", self.port, exc)
                except Exception:
                    self.metrics.errors.labels("serial_unexpected").inc()
                    log.exception("%s: unexpected failure; reopening", self.port)
                self.state = "backoff"
                await asyncio.sleep(self.backoff.next())
        finally:
            self.state = "stopped"

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            port = await loop.run_in_executor(None, self._open)
        except PortBusy as exc:
            self.metrics.errors.labels("serial_busy").inc()
            log.warning("%s: not opened: %s (one reader per port); retrying", self.port, exc)
            return
        except (serial.SerialException, OSError) as exc:
            self.metrics.errors.labels("serial_open").inc()
            log.warning("%s: cannot open (%s)", self.port, exc)
            return
        try:
            self.state = "syncing"
            decoder = make_decoder(self.protocol, max_line=self.max_line)
            self._skipped_seen = 0
            await self._pump(port, decoder)
        finally:
            await loop.run_in_executor(None, port.close)

    async def _pump(self, port: serial.Serial, decoder: Decoder) -> None:
        loop = asyncio.get_running_loop()
        pending: list[NewReading] = []
        since = 0.0
        partial = 0  # bytes dropped while syncing, not yet ended by a terminator or quiet
        try:
            while True:
                data: bytes = await loop.run_in_executor(None, _read_some, port)
                if self.state == "syncing":
                    data, partial = self._sync(data, partial)
                if data:
                    self.backoff.reset()
                    waiting = pending or self._faults
                    new = self._decode(decoder, data)
                    if not waiting and (new or self._faults):
                        since = time.monotonic()
                    pending += new
                quiet = not data
                if (pending or self._faults) and (
                    quiet or len(pending) >= MAX_GROUP or time.monotonic() - since >= COALESCE_S
                ):
                    await self._commit(pending)
                    pending = []
        finally:
            if pending or self._faults:  # read from the port: keep them if the writer takes
                with contextlib.suppress(RuntimeError):
                    self._hand_over(pending)

    def _sync(self, data: bytes, partial: int) -> tuple[bytes, int]:
        """While syncing: drop bytes up to the first line terminator; a quiet read (nothing
        for one read timeout) or a terminator ends the sync. Returns the bytes that start at
        a line boundary and the count of dropped bytes still waiting for their line's end."""
        if data:
            end = _TERMINATOR.search(data)
            if end is None:
                return b"", partial + len(data)
            partial += end.start()
            data = data[end.end() :]
        if partial:
            self.partial_lines += 1
            self.metrics.serial_partial.labels(self.port).inc()
            log.warning(
                "%s: dropped a partial line (%d byte(s) begun before the port was opened)",
                self.port,
                partial,
            )
        self.state = "open"
        log.info("%s: open (%s, %d baud)", self.port, self.protocol, self.baudrate)
        return data, 0

    def _decode(self, decoder: Decoder, data: bytes) -> list[NewReading]:
        # Lines without a device timestamp are stamped with their arrival, strictly after the
        # one before (a chunk of several lines arrives at one instant): the cloud keeps one
        # reading per sensor and timestamp.
        # With [clock] correct, the arrival is by the cloud's clock as the edge estimates it,
        # and each reading so stamped says by how much its time was moved.
        offset_ms = self.correction()
        stamped = datetime.fromtimestamp(self.now(), UTC)
        if offset_ms is not None:
            stamped += timedelta(milliseconds=offset_ms)
        now = max(stamped, self._arrival + timedelta(microseconds=1))
        readings: list[NewReading] = []
        episodes = self._episodes
        try:
            items = decoder.feed(data)
        except Exception as exc:  # a decoder bug: lose this chunk, not the port or the daemon
            self.metrics.errors.labels("serial_decode").inc()
            self.metrics.serial_skipped.labels(self.port).inc()
            log.error("%s: decoder failed on %d byte(s): %r", self.port, len(data), exc)
            return []
        for item in items:
            if isinstance(item, Fault):
                self._fault(item, now)
                self._arrival, now = now, now + timedelta(microseconds=1)
                continue
            sensor_id = self._sensor_for(item.channel)
            if sensor_id is None:
                self.metrics.serial_skipped.labels(self.port).inc()
                continue
            if episodes and sensor_id in episodes:  # the probe reads again: the fault ended
                self._fault_ended(sensor_id)
            meta = dict(item.meta) if item.meta else None
            if item.timestamp is None and offset_ms is not None:
                meta = {**(meta or {}), "clock_offset_ms": offset_ms}
            readings.append(NewReading(sensor_id, item.timestamp or now, item.value, meta))
            if item.timestamp is None:
                self._arrival, now = now, now + timedelta(microseconds=1)
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
        return readings

    def _fault(self, fault: Fault, at: datetime) -> None:
        """Count the fault and add it to its sensor's episode: one that goes on grows, one of
        another kind (or the first) starts -- logged then, not at each of its faults."""
        self.metrics.serial_faults.labels(fault.kind).inc()
        sensor_id = self._sensor_for(fault.channel)
        if sensor_id is None:
            log.warning("%s: device fault %s: %s", self.port, fault.kind, fault.detail)
            return
        going = self._episodes.get(sensor_id)
        if going is None or going[1] != fault.kind:
            going = self._episodes[sensor_id] = (str(uuid.uuid4()), fault.kind)
            log.warning(
                "%s: device fault %s (sensor %s): %s; stored until it ends",
                self.port,
                fault.kind,
                sensor_id,
                fault.detail,
            )
        seen = self._faults.get(going[0])
        self._faults[going[0]] = (
            NewFault(sensor_id, going[0], fault.kind, at, at, 1, fault.detail)
            if seen is None
            else replace(seen, last_ts=at, count=seen.count + 1)
        )

    def _fault_ended(self, sensor_id: str) -> None:
        _, kind = self._episodes.pop(sensor_id)
        log.info("%s: device fault %s of sensor %s ended (a reading)", self.port, kind, sensor_id)

    async def _commit(self, readings: list[NewReading]) -> None:
        """Hand the readings to the writer without waiting for the commit (the device is never
        acked); wait only when too many commits of this port are in flight."""
        while len(self._inflight) >= MAX_INFLIGHT:
            with contextlib.suppress(Exception):
                await self._inflight[0]
        self._hand_over(readings)

    def _hand_over(self, readings: list[NewReading]) -> None:
        faults: list[NewFault] = []
        if self._faults:
            faults, self._faults = list(self._faults.values()), {}
        done = self.writer.enqueue(Write(readings=readings, faults=faults))
        self._inflight.append(done)
        done.add_done_callback(lambda f: self._settled(f, len(readings)))

    def _settled(self, done: asyncio.Future[WriteResult], n: int) -> None:
        if done in self._inflight:
            self._inflight.remove(done)
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, BufferFull):
            # A serial device cannot be told to wait: the lines are lost, loudly and counted.
            self.dropped += n
            self.metrics.dropped.labels("buffer_full").inc(n)
        elif exc is not None:
            self.dropped += n
            self.metrics.dropped.labels("write_failed").inc(n)
            log.error("%s: %d reading(s) not stored: %r", self.port, n, exc)
        else:
            result = done.result()
            self.readings_committed += result.committed
            self.metrics.committed.labels("serial").inc(result.committed)


def _read_some(port: serial.Serial) -> bytes:
    waiting = port.in_waiting
    data = port.read(max(1, min(waiting, 65536)))
    return bytes(data)


def group_by_port(sensors: Sequence[SerialSensor]) -> dict[str, list[SerialSensor]]:
    ports: dict[str, list[SerialSensor]] = {}
    for s in sensors:
        ports.setdefault(s.port, []).append(s)
    return ports


def one_reader_per_channel(sensors: Sequence[SerialSensor]) -> None:
    for port, on_port in group_by_port(sensors).items():
        channels: set[str | None] = set()
        for s in on_port:
            if s.channel in channels:
                raise ValueError(f"two sensors read channel {s.channel!r} of {port}")
            channels.add(s.channel)


def start(sensors: Sequence[SerialSensor], ctx: SourceContext) -> dict[str, Source]:
    """One source per port."""
    return {
        f"serial:{port}": SerialSource(
            port, on_port, ctx.writer, ctx.metrics, now=ctx.now, correction=ctx.correction
        )
        for port, on_port in group_by_port(sensors).items()
    }


KIND = register(SourceKind("serial", SerialSensor, start, check=one_reader_per_channel))
