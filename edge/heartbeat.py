"""The edge's state: built from the buffer and the running sources, sent to the cloud as a
heartbeat (``PUT /api/v1/edges/{id}/heartbeat``), written beside the buffer for
``benchlink-edge status``, which prints the same document.

Heartbeats are not buffered: one that cannot be sent is dropped, the next one supersedes it.
While the cloud is away the state file still changes, so ``status`` at the bench tells what
the portal cannot (how long the backlog has waited).

Ages are measured against ``time.time()``, the clock that stamped the readings' arrival in
the buffer; the clock under test (:mod:`edge.clock`) is the daemon's injectable one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.cli import package_version
from common.heartbeat import (
    MAX_HEARTBEAT_BYTES,
    BufferState,
    ClockEstimate,
    Heartbeat,
    SensorState,
    SequenceReport,
)
from edge.buffer import INFLIGHT, PENDING, Buffer, is_disk_full
from edge.clock import ClockEstimator, TimeSource, sample
from edge.cloud_client import Answer, Requester, TransportError
from edge.config import EdgeConfig
from edge.heartbeat_size import fit

log = logging.getLogger("benchlink.edge")

TIME_PATH = "/api/v1/time"
#: clock samples from ``GET /api/v1/time`` while there is no estimate yet; after that each
#: heartbeat's answer (the same two server times) is the sample, so a steady edge costs the
#: cloud one request a period
FIRST_SAMPLES = 4
#: the least a heartbeat is cut to after the cloud refused one as too large (413)
MIN_HEARTBEAT_BYTES = 16 * 1024


def state_path(buffer: Path) -> Path:
    """Where the daemon keeps its last heartbeat for ``status``: beside the buffer."""
    return buffer.with_name(buffer.name + ".heartbeat.json")


def collect(
    buf: Buffer,
    cfg: EdgeConfig,
    *,
    sent_at: datetime,
    source_states: Mapping[str, str],
    uptime_s: float | None = None,
    clock: ClockEstimate | None = None,
) -> Heartbeat:
    """The edge's state now (blocking: the buffer's reads; run it on the reader's thread)."""
    with buf.snapshot() as c:
        status = buf.status()
        sealed = {s["sensor_id"]: int(s["sealed_upto"]) for s in buf.sensors()}
        now = time.time()
        sensors = {
            sid: _sensor(c, sid, s, sealed.get(sid, 0), now, source_states)
            for sid, s in status["sensors"].items()
        }
        # each sensor's sequence numbers: captured, waiting, dead-lettered (completeness)
        for sid, report in buf.sequence_report().items():
            if sid in sensors:
                sensors[sid].sequence = SequenceReport.model_validate(report)
    return Heartbeat(
        edge_id=cfg.edge.id,
        version=package_version()[:64],
        host=socket.gethostname()[:255],
        uptime_s=uptime_s,
        sent_at=sent_at,
        heartbeat_s=cfg.edge.heartbeat_s,
        running=uptime_s is not None,
        buffer=BufferState(
            id=status["edge_id"],
            path=status["buffer"],
            used_bytes=status["used_bytes"],
            max_bytes=status["max_bytes"],
            disk_room_bytes=status["disk_room_bytes"],
            min_free_bytes=status["min_free_bytes"],
            full=status["full"],
        ),
        dead_letters=status["dead_letters"],
        clock=clock,
        sensors=sensors,
    )


def _sensor(
    c: sqlite3.Connection,
    sid: str,
    s: dict[str, Any],
    sealed_upto: int,
    now: float,
    source_states: Mapping[str, str],
) -> SensorState:
    last = c.execute(
        "SELECT ts, arrived FROM readings WHERE sensor_id = ? ORDER BY id DESC LIMIT 1", (sid,)
    ).fetchone()
    oldest = _oldest_waiting(c, sid, sealed_upto)
    return SensorState(
        source=s["source"],
        source_state=source_states.get(sid, "stopped"),
        run_id=s["run_id"],
        capture_session_id=s["capture_session_id"],
        last_reading_ts=last[0] if last else None,
        last_reading_age_s=_age(now, last[1]) if last else None,
        waiting=s["pending"] + s["inflight"],
        oldest_waiting_age_s=_age(now, oldest) if oldest is not None else None,
        pending=s["pending"],
        inflight=s["inflight"],
        synced=s["synced"],
        dead=s["dead"],
        rate_per_s=s["rate_per_s"],
        last_error=(s["last_error"] or None) and s["last_error"][:2000],
    )


def _age(now: float, then: float) -> float:
    return round(max(0.0, now - then), 3)


def _oldest_waiting(c: sqlite3.Connection, sid: str, sealed_upto: int) -> float | None:
    """When the oldest reading still waiting arrived: the first unsealed one, or the first of
    the oldest batch in the queue (each an index probe, whatever the backlog's size)."""
    found = []
    row = c.execute(
        "SELECT arrived FROM readings WHERE sensor_id = ? AND id > ? ORDER BY id LIMIT 1",
        (sid, sealed_upto),
    ).fetchone()
    if row:
        found.append(row[0])
    for state in (PENDING, INFLIGHT):
        batch = c.execute(
            "SELECT id, ranged, first_id FROM batches WHERE sensor_id = ? AND state = ?"
            " ORDER BY seq LIMIT 1",
            (sid, state),
        ).fetchone()
        if batch is None:
            continue
        batch_id, ranged, first_id = batch
        if ranged:
            row = c.execute(
                "SELECT arrived FROM readings WHERE sensor_id = ? AND id >= ?"
                " AND batch_id IS NULL ORDER BY id LIMIT 1",
                (sid, first_id),
            ).fetchone()
        else:
            row = c.execute(
                "SELECT MIN(arrived) FROM readings WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        if row and row[0] is not None:
            found.append(row[0])
    return min(found) if found else None


def write_state(path: Path, heartbeat: Heartbeat) -> None:
    """Replace the state file at once (a reader never sees half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "heartbeat": heartbeat.model_dump(mode="json")}))
    os.replace(tmp, path)


def read_state(path: Path) -> Heartbeat | None:
    """The running daemon's last heartbeat, or None when no daemon writes this file (none
    ever did, or its process is gone)."""
    try:
        saved = json.loads(path.read_text())
        os.kill(int(saved["pid"]), 0)
        return Heartbeat.model_validate(saved["heartbeat"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def source_states(sources: Mapping[str, object]) -> dict[str, str]:
    """Each sensor's source state, from the running sources (a serial source reads one or
    more sensors on its port, an MQTT source all of the MQTT ones)."""
    states: dict[str, str] = {}
    for source in sources.values():
        state = str(getattr(source, "state", "unknown"))
        sensors = getattr(source, "sensors", ())
        ids = sensors.keys() if isinstance(sensors, Mapping) else [s.sensor_id for s in sensors]
        states.update({str(sid): state for sid in ids})
    return states


def device_skews(sources: Mapping[str, object]) -> dict[str, float]:
    """Each device-stamping sensor's skew, from the sources that measure one (MQTT)."""
    skews: dict[str, float] = {}
    for source in sources.values():
        measure = getattr(source, "device_skew_ms", None)
        if callable(measure):
            skews.update(measure())
    return skews


class Heartbeats:
    """The daemon's heartbeat task: every ``[edge] heartbeat_s``, and after a sync round that
    changed how syncing goes (see :meth:`after_sync_round`), build the state, write it beside
    the buffer and send it; the answer is a clock sample (the first beat samples ``GET
    /api/v1/time`` first)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        reader: Buffer,
        client: Requester | None,
        sources: Callable[[], Mapping[str, object]],
        time_source: TimeSource = time.time,
    ) -> None:
        self.cfg, self.reader, self.client = cfg, reader, client
        self.sources, self.now = sources, time_source
        self.clock = ClockEstimator(cfg.clock.max_offset_ms)
        self.started = time.monotonic()
        self.wake = asyncio.Event()
        self.path = state_path(cfg.buffer.path)
        self.last: Heartbeat | None = None
        self.sent = 0
        self._attempted = -math.inf
        #: whether each sensor's last sync round got its batches answered
        self._rounds: dict[str, bool] = {}
        #: what went wrong last (logged once until it changes): None while all is well
        self._trouble: str | None = None
        #: the most bytes a heartbeat is sent as (less after a 413: see :meth:`_shrink`)
        self.limit = MAX_HEARTBEAT_BYTES

    @property
    def sending(self) -> bool:
        return self.client is not None and self.cfg.edge.id is not None

    def after_sync_round(self, sensor_id: str, answered: bool) -> None:
        """A sync round whose outcome differs from the sensor's last (the cloud stopped
        answering, or answers again: the backlog starts to drain) is reported at once, not
        sooner than ``min_interval_s`` after the last heartbeat. Rounds like the one before
        are not: a busy edge syncs every second, and 1,000 of them must not heartbeat every
        second."""
        changed = self._rounds.get(sensor_id, True) != answered
        self._rounds[sensor_id] = answered
        if changed and time.monotonic() - self._attempted >= self.cfg.edge.min_interval_s:
            self.wake.set()

    async def run(self) -> None:
        if not self.sending:
            log.info(
                "heartbeat: none sent, [edge] id and token are not set (register this PC:"
                " POST /api/v1/edges); `benchlink-edge status` still shows its state"
            )
        while True:
            try:
                await self.beat()
            except Exception as exc:  # a bug or a full disk must not stop the daemon
                if is_disk_full(exc):  # the state file could not be written: next beat
                    log.warning("heartbeat: the disk is full (%s)", exc)
                else:
                    log.exception("heartbeat failed")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.edge.heartbeat_s):
                    await self.wake.wait()

    async def beat(self) -> None:
        self._attempted = time.monotonic()
        if self.sending and self.clock.count == 0:
            await self.sample_clock(FIRST_SAMPLES)
        beat = await self.reader.call(
            collect,
            self.reader,
            self.cfg,
            sent_at=datetime.fromtimestamp(self.now(), UTC),
            source_states=source_states(self.sources()),
            uptime_s=round(time.monotonic() - self.started, 3),
            clock=self.clock.estimate(),
        )
        for sid, skew in device_skews(self.sources()).items():
            if sid in beat.sensors:
                beat.sensors[sid].device_skew_ms = skew
        self.last = beat
        await asyncio.to_thread(write_state, self.path, beat)
        if self.sending:
            await self.send(beat)

    def _headers(self) -> dict[str, str]:
        token = self.cfg.edge.token
        assert token is not None
        return {"Authorization": f"Bearer {token.get_secret_value()}"}

    async def sample_clock(self, n: int) -> None:
        assert self.client is not None
        for _ in range(n):
            t0 = self.now()
            try:
                answer = await self.client.request("GET", TIME_PATH, None, self._headers())
            except TransportError as exc:
                self._note(f"cloud unreachable ({exc})")
                return
            t3 = self.now()
            if answer.status != 200:
                self._note(_refusal("GET " + TIME_PATH, answer))
                return
            self._sample(t0, answer, t3)

    def _sample(self, t0: float, answer: Answer, t3: float) -> None:
        try:
            body = answer.json()
            t1, t2 = body["received_us"] / 1e6, body["time_us"] / 1e6
        except (ValueError, KeyError, TypeError):  # a cloud before GET /api/v1/time
            return
        self.clock.add(sample(t0, t1, t2, t3))

    async def send(self, beat: Heartbeat) -> None:
        assert self.client is not None
        path = f"/api/v1/edges/{self.cfg.edge.id}/heartbeat"
        headers = {**self._headers(), "Content-Type": "application/json"}
        while True:
            # Cut to the size limit (edge.heartbeat_size); unset fields left out: a cloud
            # older than this edge takes the heartbeat unless a field it does not know has
            # something to say.
            body = await asyncio.to_thread(fit, beat, self.limit)
            t0 = self.now()
            try:
                answer = await self.client.request("PUT", path, body, headers)
            except TransportError as exc:
                self._note(f"cloud unreachable ({exc})")
                return
            if answer.status != 413 or not self._shrink(len(body), answer):
                break
        if answer.status != 200:
            self._note(_refusal("heartbeat", answer))
            return
        self._sample(t0, answer, self.now())
        self.sent += 1
        if self._trouble is not None:
            log.info("heartbeat: the cloud takes them again (after: %s)", self._trouble)
            self._trouble = None

    def _shrink(self, sent: int, answer: Answer) -> bool:
        """After a 413: cut heartbeats to the cloud's limit (as its answer names it, else
        half) from now on, say so once, and send again; False when they are at their
        smallest already (then the refusal is logged as any other, once)."""
        if self.limit <= MIN_HEARTBEAT_BYTES:
            return False
        named = _body_limit(answer)
        smaller = named if named is not None else min(self.limit, sent) // 2
        self.limit = max(MIN_HEARTBEAT_BYTES, min(smaller, sent - 1, self.limit - 1))
        if self.limit >= sent:  # it was no bigger than the least it can be cut to
            return False
        log.warning(
            "heartbeat: the cloud refused %d bytes as too large (413%s); heartbeats are cut to"
            " %d bytes from now on, what is left out is listed in their `truncated` (raise the"
            " cloud's BENCHLINK_MAX_BODY_BYTES for whole ones)",
            sent,
            f", its limit {named} bytes" if named is not None else "",
            self.limit,
        )
        return True

    def _note(self, trouble: str) -> None:
        if trouble != self._trouble:
            log.warning(
                "heartbeat: not sent, %s; the next one supersedes it (none are queued)", trouble
            )
        self._trouble = trouble


def _body_limit(answer: Answer) -> int | None:
    """The byte limit a 413 names ("request body over the 1048576-byte limit"), if any."""
    try:
        detail = str(answer.json().get("detail", ""))
    except (ValueError, AttributeError):
        return None
    found = re.search(r"over the (\d+)-byte limit", detail)
    return int(found.group(1)) if found else None


def _refusal(what: str, answer: Answer) -> str:
    try:
        detail = str(answer.json().get("detail", ""))
    except (ValueError, AttributeError):
        detail = answer.text[:200]
    hint = ""
    if answer.status in (401, 403):
        hint = "; put the edge's current token in [edge] token (rotate-token gives a new one)"
    if answer.status == 413:
        hint = (
            f"; heartbeats are cut to {MIN_HEARTBEAT_BYTES} bytes at the least: raise the"
            " cloud's BENCHLINK_MAX_BODY_BYTES"
        )
    return f"{what} answered {answer.status} {detail}{hint}"
