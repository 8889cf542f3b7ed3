"""The edge daemon: one TaskGroup supervising the writer, the sources, the sync loops,
maintenance (retention, gauges) and the systemd watchdog.

Shutdown (SIGTERM/SIGINT): the sources stop first (nothing more is acked), the writer commits
what is queued, then the sync loops stop; STOPPING=1 is sent to systemd. Anything a source had
received but not yet acked is re-delivered by the broker (MQTT) after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Literal

from edge.buffer import Buffer
from edge.cloud_client import CloudClient
from edge.config import EdgeConfig
from edge.instance import BufferLock, Refused
from edge.metrics import EdgeMetrics
from edge.notify import notify, watchdog_interval
from edge.sources.mqtt import MqttSource
from edge.sources.serial import SerialSource, group_by_port
from edge.sync import SensorSync
from edge.writer import Writer

log = logging.getLogger("benchlink.edge")

MAINTENANCE_EVERY_S = 5.0


class Daemon:
    def __init__(self, cfg: EdgeConfig, *, client: CloudClient | None = None) -> None:
        """``client`` replaces the HTTP client built from ``[cloud]`` (tests inject faults)."""
        self.cfg = cfg
        self._client = client
        self.metrics = EdgeMetrics()
        # First of all: AlreadyRunning if another daemon has this buffer.
        self.lock = BufferLock(cfg.buffer.path).acquire()
        try:
            self.buffer = Buffer(cfg.buffer.path, max_bytes=cfg.buffer.max_bytes)
            # Gauges read on a connection and thread of their own (WAL: readers never block
            # the writer), so a scan never holds up a commit.
            self.reader = Buffer(cfg.buffer.path, max_bytes=cfg.buffer.max_bytes)
        except BaseException:
            self.lock.release()
            raise
        self.writer = Writer(self.buffer, self.metrics)
        self.state: Literal["new", "starting", "running", "stopping", "stopped"] = "new"
        self.metrics_port: int | None = None
        self._stop = asyncio.Event()
        #: why the daemon must not go on (another daemon holds its MQTT client id)
        self.refused: Refused | None = None
        self.edge_id = ""

    def register_sensors(self) -> None:
        for s in self.cfg.sensors:
            self.buffer.upsert_sensor(
                str(s.sensor_id),
                s.token.get_secret_value(),
                s.source,
                str(s.run_id),
                str(s.capture_session_id),
            )

    def stop(self) -> None:
        self._stop.set()

    def refuse(self, reason: Refused) -> None:
        """Stop as on SIGTERM (nothing accepted is lost), then :meth:`run` raises ``reason``."""
        self.refused = reason
        self.stop()

    async def run(self) -> None:
        self.state = "starting"
        await self.buffer.call(self.register_sensors)
        self.edge_id = await self.buffer.call(self.buffer.edge_id)
        if self.cfg.metrics.enabled:
            self.metrics_port = self.metrics.serve(self.cfg.metrics.host, self.cfg.metrics.port)
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics.host, self.metrics_port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Signals reach only the main thread's loop (RuntimeError elsewhere, as when a
            # test runs the daemon in a thread) and not every platform's loop supports them
            # (NotImplementedError); there the caller stops the daemon with stop().
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            async with (
                self._client or CloudClient(self.cfg.cloud) as client,
                asyncio.TaskGroup() as tg,
            ):
                writer = tg.create_task(self.writer.run(), name="writer")
                sources = self._start_sources(tg)
                syncs = [
                    tg.create_task(
                        SensorSync(
                            str(s.sensor_id), self.buffer, client, self.cfg.sync, self.metrics
                        ).run(),
                        name=f"sync:{s.sensor_id}",
                    )
                    for s in self.cfg.sensors
                ]
                background = [
                    tg.create_task(self._maintenance(), name="maintenance"),
                    tg.create_task(self._watchdog(), name="watchdog"),
                ]
                self.state = "running"
                notify("READY=1")
                log.info("running with %d sensor(s)", len(self.cfg.sensors))
                await self._stop.wait()
                self.state = "stopping"
                notify("STOPPING=1")
                log.info("stopping: sources first, then the writer flushes its queue")
                for task in sources:
                    task.cancel()
                await asyncio.gather(*sources, return_exceptions=True)
                await self.writer.close()
                await writer
                for task in syncs + background:
                    task.cancel()
        finally:
            self.state = "stopped"
            self.reader.close()
            self.buffer.close()
            self.lock.release()
            log.info("stopped")
        if self.refused is not None:
            raise self.refused

    def _start_sources(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        tasks = []
        sync = self.cfg.sync
        for port, sensors in group_by_port(self.cfg.sensors).items():
            src = SerialSource(port, sensors, self.writer, self.metrics)
            tasks.append(tg.create_task(src.run(), name=f"serial:{port}"))
        mqtt_sensors = [s for s in self.cfg.sensors if s.source == "mqtt"]
        if mqtt_sensors:
            mqtt = MqttSource(
                self.cfg.mqtt,
                mqtt_sensors,
                self.writer,
                self.metrics,
                backoff_initial_s=sync.backoff_initial_s,
                backoff_max_s=sync.backoff_max_s,
                edge_id=self.edge_id,
                on_refused=self.refuse,
            )
            tasks.append(tg.create_task(mqtt.run(), name="mqtt"))
        return tasks

    async def _maintenance(self) -> None:
        """Retention, dead-letter rotation and gauges. Errors are counted and logged, never
        fatal. Only the (indexed, incremental) deletions run on the commit thread."""
        last_prune = 0.0
        while True:
            try:
                if time.monotonic() - last_prune > 60:
                    await self._prune()
                    last_prune = time.monotonic()
                used, unsynced = await self.reader.call(self.reader.gauges)
                self.metrics.buffer_bytes.set(used)
                self.metrics.unsynced.set(unsynced)
            except Exception:
                self.metrics.errors.labels("maintenance").inc()
                log.exception("maintenance failed")
            await asyncio.sleep(MAINTENANCE_EVERY_S)

    async def _prune(self) -> None:
        pruned = await self.buffer.call(self.buffer.prune, self.cfg.buffer.retention_s)
        if pruned:
            log.info("retention: pruned %d synced batch(es)", pruned)
        keep = self.cfg.buffer.max_dead_letters
        rotated = await self.buffer.call(self.buffer.rotate_dead_letters, keep)
        if rotated:
            self.metrics.dead_letters_rotated.inc(rotated)
            log.warning(
                "dead letters: deleted the %d oldest record(s) to keep %d (buffer.max_dead_letters;"
                " dead batches and their readings are kept)",
                rotated,
                keep,
            )

    async def _watchdog(self) -> None:
        """Ping systemd only while the event loop turns and the writer makes progress (not
        stuck in one commit, not sitting on a queue it does not commit)."""
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            if self.writer.healthy(stall_s=interval):
                notify("WATCHDOG=1")
            else:
                self.metrics.errors.labels("watchdog").inc()
                log.error(
                    "writer is %s, no commit for %.0fs: withholding the watchdog ping",
                    self.writer.state,
                    time.monotonic() - self.writer.last_commit,
                )
            await asyncio.sleep(interval)
