"""The edge daemon: one TaskGroup supervising the writer, the sources, the sync loops,
maintenance (retention, gauges) and the systemd watchdog.

Shutdown (SIGTERM/SIGINT): the sources stop first (nothing more is acked), the writer commits
what is queued, then the sync loops stop; STOPPING=1 is sent to systemd. Anything a source had
received but not yet acked is re-delivered by the broker (MQTT) after the restart.

Reload (SIGHUP, ``systemctl reload``): the config file is read again. An invalid one is
refused with one log line and the daemon goes on with the config it has. Of a valid one, the
sensors' tokens and bindings (run / capture session) are applied at once; every other change
waits for a restart, and the log names each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from edge.buffer import Buffer, is_disk_full
from edge.clock import TimeSource
from edge.cloud_client import CloudClient, Requester
from edge.config import ConfigError, EdgeConfig, SensorConfig, exposed_secrets, load_config
from edge.heartbeat import Heartbeats
from edge.instance import BufferLock, Refused
from edge.metrics import EdgeMetrics
from edge.notify import notify, watchdog_interval
from edge.rules import RulePuller
from edge.sources import kinds
from edge.sources.base import SourceContext
from edge.sync import SensorSync
from edge.writer import Writer

log = logging.getLogger("benchlink.edge")

MAINTENANCE_EVERY_S = 5.0
SECTIONS = ("cloud", "buffer", "sync", "mqtt", "metrics", "edge", "clock")
#: sensor settings a reload applies at once (the buffer holds them, every send/commit reads them)
LIVE_SENSOR_FIELDS = ("token", "run_id", "capture_session_id")


class StartupError(Exception):
    """The daemon cannot start with this configuration (one line: what, and what to do)."""


def open_buffer(cfg: EdgeConfig) -> Buffer:
    """The buffer the config names, or a StartupError saying why it cannot be opened."""
    path = cfg.buffer.path
    try:
        return Buffer(
            path, max_bytes=cfg.buffer.max_bytes, min_free_bytes=cfg.buffer.min_free_bytes
        )
    except RuntimeError as exc:  # a file of a newer scheme: the message says what to do
        raise StartupError(f"buffer {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise cannot_open(path, exc) from None


def cannot_open(path: Path, exc: OSError | sqlite3.Error) -> StartupError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StartupError(
        f"buffer {path}: cannot open it ({reason}); run as the daemon's user"
        " (sudo -u benchlink ...) or fix [buffer] path"
    )


def lock_buffer(cfg: EdgeConfig) -> BufferLock:
    """The buffer's lock (AlreadyRunning if another daemon holds it), or a StartupError
    saying why its directory cannot be used."""
    try:
        return BufferLock(cfg.buffer.path).acquire()
    except OSError as exc:
        raise cannot_open(cfg.buffer.path, exc) from None


def config_changes(
    old: EdgeConfig, new: EdgeConfig
) -> tuple[list[tuple[SensorConfig, list[str]]], list[str]]:
    """What a reload finds: the sensors (of ``new``) whose token or binding changed, with the
    names of those fields, which it applies; and the other changed settings, which wait for a
    restart."""
    live: list[tuple[SensorConfig, list[str]]] = []
    restart = [
        f"{section}.{name}"
        for section in SECTIONS
        for name in type(getattr(old, section)).model_fields
        if getattr(getattr(old, section), name) != getattr(getattr(new, section), name)
    ]
    before = {s.sensor_id: s for s in old.sensors}
    after = {s.sensor_id: s for s in new.sensors}
    restart += [f"sensor {sid} removed" for sid in before if sid not in after]
    restart += [f"sensor {sid} added" for sid in after if sid not in before]
    for sid, a in before.items():
        b = after.get(sid)
        if b is None:
            continue
        fields = dict.fromkeys([*type(a).model_fields, *type(b).model_fields])
        changed = [name for name in fields if getattr(a, name, None) != getattr(b, name, None)]
        if now := [name for name in changed if name in LIVE_SENSOR_FIELDS]:
            live.append((b, now))
        restart += [f"sensor {sid} {n}" for n in changed if n not in LIVE_SENSOR_FIELDS]
    return live, restart


def _with_live_fields(cfg: EdgeConfig, sensors: list[SensorConfig]) -> EdgeConfig:
    """``cfg`` with the token and binding of these sensors: the config the daemon now runs."""
    new = {s.sensor_id: s for s in sensors}

    def merged(s: SensorConfig) -> SensorConfig:
        if s.sensor_id not in new:
            return s
        return s.model_copy(update={f: getattr(new[s.sensor_id], f) for f in LIVE_SENSOR_FIELDS})

    return cfg.model_copy(update={"sensors": [merged(s) for s in cfg.sensors]})


def _both(
    beats: Callable[[str, bool], None], rules: RulePuller | None
) -> Callable[[str, bool], None]:
    """A sync round's outcome, told to the heartbeats and to the rules' puller."""
    if rules is None:
        return beats

    def told(sensor_id: str, answered: bool) -> None:
        beats(sensor_id, answered)
        rules.after_sync_round(sensor_id, answered)

    return told


class Daemon:
    def __init__(
        self,
        cfg: EdgeConfig,
        *,
        client: CloudClient | None = None,
        config_path: Path | None = None,
        time_source: TimeSource = time.time,
    ) -> None:
        """``client`` replaces the HTTP client built from ``[cloud]`` (tests inject faults);
        ``config_path`` is the file a SIGHUP reads again (none: SIGHUP is ignored);
        ``time_source`` is the clock the daemon compares with the cloud's (tests shift it)."""
        self.cfg = cfg
        self.time_source = time_source
        #: the running sources, by task name (their states go into the heartbeat)
        self.sources: dict[str, object] = {}
        self.heartbeats: Heartbeats | None = None
        self.config_path = config_path
        self._client = client
        self.syncs: dict[str, SensorSync] = {}
        self.rules: RulePuller | None = None
        self._reloads: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()  # one reload at a time: each compares with the last
        self.metrics = EdgeMetrics()
        # First of all: AlreadyRunning if another daemon has this buffer.
        self.lock = lock_buffer(cfg)
        try:
            self.buffer = open_buffer(cfg)
            # Gauges read on a connection and thread of their own (WAL: readers never block
            # the writer), so a scan never holds up a commit.
            self.reader = open_buffer(cfg)
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
        for sid in self.buffer.keep_rules_of(str(s.sensor_id) for s in self.cfg.sensors):
            log.info("alarm rules of sensor %s: dropped, it is no longer in this config", sid)

    def stop(self) -> None:
        self._stop.set()

    def refuse(self, reason: Refused) -> None:
        """Stop as on SIGTERM (nothing accepted is lost), then :meth:`run` raises ``reason``."""
        self.refused = reason
        self.stop()

    def request_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """Read the config file again and apply what can be applied live (see the module)."""
        async with self._reloading:
            await self._reload()

    async def _reload(self) -> None:
        path = self.config_path
        if path is None:
            log.warning("reload: no config file to read again (started without one)")
            return
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            log.error("reload refused, still running on the previous config: %s", exc)
            return
        self._warn_exposed(new)
        live, restart = config_changes(self.cfg, new)
        if live:
            sensors = [s for s, _ in live]
            await self.buffer.call(self._apply_sensors, sensors)
            self.cfg = _with_live_fields(self.cfg, sensors)
            for s in sensors:
                if (sync := self.syncs.get(str(s.sensor_id))) is not None:
                    sync.wake.set()  # a loop in backoff tries again now, with the new token
            log.info(
                "reload: applied %s",
                "; ".join(f"sensor {s.sensor_id} {', '.join(f)}" for s, f in live),
            )
        if restart:
            log.warning("reload: changed, applied only after a restart: %s", ", ".join(restart))
        if not live and not restart:
            log.info("reload: %s read again, nothing changed", path)

    def _apply_sensors(self, sensors: list[SensorConfig]) -> None:
        for s in sensors:
            source = next(o.source for o in self.cfg.sensors if o.sensor_id == s.sensor_id)
            self.buffer.upsert_sensor(
                str(s.sensor_id),
                s.token.get_secret_value(),
                source,
                str(s.run_id),
                str(s.capture_session_id),
            )

    def _warn_exposed(self, cfg: EdgeConfig) -> None:
        if self.config_path is not None and (warning := exposed_secrets(self.config_path, cfg)):
            log.warning("%s", warning)

    def _serve_metrics(self) -> None:
        host, port = self.cfg.metrics.host, self.cfg.metrics.port
        try:
            self.metrics_port = self.metrics.serve(host, port)
        except OSError as exc:
            where = f" in {self.config_path}" if self.config_path else ""
            raise StartupError(
                f"metrics: cannot listen on {host}:{port} ({exc.strerror or exc}); another"
                f" process holds that port: set [metrics] port to a free one (0 = any) or"
                f" enabled = false{where}"
            ) from None
        log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    async def run(self) -> None:
        """Start, run until :meth:`stop` (SIGTERM, SIGINT), stop in order (see the module)."""
        self.state = "starting"
        self._warn_exposed(self.cfg)
        try:
            await self._prepare()
        except BaseException:
            self._close()
            raise
        self._handle_signals()
        try:
            async with (
                self._client or CloudClient(self.cfg.cloud) as client,
                asyncio.TaskGroup() as tg,
            ):
                await self._supervise(tg, client)
        finally:
            self._close()
            log.info("stopped")
        if self.refused is not None:
            raise self.refused

    async def _prepare(self) -> None:
        await self.buffer.call(self.register_sensors)
        self.edge_id = await self.buffer.call(self.buffer.edge_id)
        if self.cfg.metrics.enabled:
            self._serve_metrics()

    def clock_correction(self) -> float | None:
        """The ms to add to a timestamp the edge gives a reading itself: the clock estimate's
        offset (the cloud's clock minus the edge's) with ``[clock] correct = true``; None
        without it, or before the first estimate (those readings say nothing was moved)."""
        if not self.cfg.clock.correct or self.heartbeats is None:
            return None
        estimate = self.heartbeats.clock.estimate()
        return None if estimate is None else estimate.offset_ms

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        handlers = [(signal.SIGTERM, self.stop), (signal.SIGINT, self.stop)]
        if self.config_path is not None:
            handlers.append((signal.SIGHUP, self.request_reload))
        for sig, handler in handlers:
            # Signals reach only the main thread's loop (RuntimeError elsewhere, as when a
            # test runs the daemon in a thread) and not every platform's loop supports them
            # (NotImplementedError); there the caller stops the daemon with stop().
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)

    async def _supervise(self, tg: asyncio.TaskGroup, client: CloudClient) -> None:
        """Every task of the daemon in ``tg``; return once they are stopped in order."""
        writer = tg.create_task(self.writer.run(), name="writer")
        sources = self._start_sources(tg)
        self.syncs = {
            str(s.sensor_id): SensorSync(
                str(s.sensor_id), self.buffer, client, self.cfg.sync, self.metrics
            )
            for s in self.cfg.sensors
        }
        beats = self.heartbeats = Heartbeats(
            self.cfg,
            self.reader,
            client if isinstance(client, Requester) else None,
            lambda: self.sources,
            self.time_source,
        )
        rest = [tg.create_task(sync.run(), name=f"sync:{sid}") for sid, sync in self.syncs.items()]
        rules = None
        if isinstance(client, Requester):
            rules = self.rules = RulePuller(self.buffer, client, list(self.syncs))
            rest.append(tg.create_task(rules.run(), name="alarm-rules"))
        for sync in self.syncs.values():
            sync.on_round = _both(beats.after_sync_round, rules)
        rest.append(tg.create_task(self._maintenance(), name="maintenance"))
        rest.append(tg.create_task(self._watchdog(), name="watchdog"))
        rest.append(tg.create_task(beats.run(), name="heartbeat"))
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
        for task in rest:
            task.cancel()

    def _close(self) -> None:
        self.state = "stopped"
        self.reader.close()
        self.buffer.close()
        self.lock.release()

    def _start_sources(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """Each kind of source (see :mod:`edge.sources`) starts the sources of its sensors."""
        ctx = SourceContext(
            self.writer,
            self.metrics,
            self.cfg,
            self.edge_id,
            self.refuse,
            now=self.time_source,
            correction=self.clock_correction,
        )
        tasks = []
        for name, kind in kinds().items():
            if sensors := [s for s in self.cfg.sensors if s.source == name]:
                for task_name, source in kind.start(sensors, ctx).items():
                    self.sources[task_name] = source
                    tasks.append(tg.create_task(source.run(), name=task_name))
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
                await self.buffer.call(self.buffer.stale_tick)
                used, unsynced = await self.reader.call(self.reader.gauges)
                self.metrics.buffer_bytes.set(used)
                self.metrics.unsynced.set(unsynced)
            except Exception as exc:
                self.metrics.errors.labels("maintenance").inc()
                if is_disk_full(exc):  # retention needs a little room too; next round
                    log.warning("maintenance: the disk is full (%s); trying again later", exc)
                else:
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
